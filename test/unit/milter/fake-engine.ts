// A recording Engine for the milter front end's unit tests (the seam of pipeline/session.ts):
// every call is kept as plain values, every verdict is what the test scripts.
// Must not: decide anything itself (no SPF, no signing): tests say what the engine answers.

import { tmpdir } from 'node:os';
import { SmtpReplyError, type SmtpReply } from '../../../src/errors.ts';
import { MessageSink } from '../../../src/message/index.ts';
import type { DecisionRecord } from '../../../src/pipeline/decision-record.ts';
import type { ClientFacts, DeliveryReport, Engine, EngineSession, EndVerdict, FrontEnd, Verdict } from '../../../src/pipeline/session.ts';

export type Call = [string, ...unknown[]];

/** The record an accepting end verdict carries (the fake engine keeps none of its own). */
export const record: DecisionRecord = { version: 1, session: 'fake', listener: 'milter', client: '', from: '', recipients: 0, refusedRecipients: [], durations: {} };

/** An engine that records every call and answers what the test scripted. */
export class FakeEngine implements Engine {
  /** The limits the sink of receive() enforces (the real engine takes them from config.limits). */
  readonly limits: { maxMessageSize: number; maxHeaderSize: number };
  calls: Call[] = [];
  frontEnds: FrontEnd[] = [];
  mailVerdict: Verdict = { action: 'accept' };
  rcptVerdict: (to: string) => Verdict = () => ({ action: 'accept' });
  endVerdict: (message: Buffer) => EndVerdict = (message) => ({ action: 'accept', edits: { add: [], remove: [] }, message, record });

  constructor(limits: { maxMessageSize: number; maxHeaderSize: number } = { maxMessageSize: 25 * 1024 * 1024, maxHeaderSize: 256 * 1024 }) {
    this.limits = limits;
  }

  session(frontEnd: FrontEnd): EngineSession {
    this.frontEnds.push(frontEnd);
    const engine = this;
    let open = false;
    return {
      get transactionOpen() {
        return open;
      },
      async mail(from: string, client: ClientFacts) {
        engine.calls.push(['mail', from, client]);
        open = engine.mailVerdict.action === 'accept';
        return engine.mailVerdict;
      },
      discard: () => engine.calls.push(['discard']),
      async rcpt(to: string) {
        engine.calls.push(['rcpt', to]);
        return engine.rcptVerdict(to);
      },
      recipientRefused: (code: number) => engine.calls.push(['recipientRefused', code]),
      // A real sink in memory, with the limits the test gave: the milter streams into it.
      receive: () =>
        new MessageSink({ ...engine.limits, bareLineEndings: 'normalize', nul: 'reject', spillThreshold: Number.POSITIVE_INFINITY, spillDirectory: tmpdir() }),
      end: (async (input: Buffer | MessageSink) => {
        let message: Buffer;
        if (Buffer.isBuffer(input)) message = input;
        else {
          try {
            const source = await input.finish();
            const rest: Buffer[] = [];
            for await (const chunk of source.rest()) rest.push(chunk);
            message = Buffer.concat([source.header, ...rest]);
          } catch (error) {
            // The sink's own refusal (552 5.3.4 for size), as the engine reports it.
            if (!(error instanceof SmtpReplyError)) throw error;
            open = false;
            engine.calls.push(['failed', error.reply.code, error.message]);
            return { action: 'reject', reply: error.reply, reason: error.message };
          }
        }
        engine.calls.push(['end', message.toString('latin1')]);
        const verdict = engine.endVerdict(message);
        if (verdict.action !== 'accept') open = false;
        return verdict;
      }) as EngineSession['end'],
      delivered: (report: DeliveryReport) => {
        open = false;
        engine.calls.push(['delivered', report]);
      },
      failed: (reply: SmtpReply, reason?: string) => {
        open = false;
        engine.calls.push(['failed', reply.code, reason]);
      },
      abort: () => {
        open = false;
        engine.calls.push(['abort']);
      },
    };
  }
}
