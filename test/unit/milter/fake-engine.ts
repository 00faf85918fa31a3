// A recording Engine for the milter front end's unit tests (the seam of pipeline/session.ts):
// every call is kept as plain values, every verdict is what the test scripts.
// Must not: decide anything itself (no SPF, no signing): tests say what the engine answers.

import type { SmtpReply } from '../../../src/errors.ts';
import type { DecisionRecord } from '../../../src/pipeline/decision-record.ts';
import type { ClientFacts, DeliveryReport, Engine, EngineSession, EndVerdict, FrontEnd, Verdict } from '../../../src/pipeline/session.ts';

export type Call = [string, ...unknown[]];

/** The record an accepting end verdict carries (the fake engine keeps none of its own). */
export const record: DecisionRecord = { version: 1, session: 'fake', listener: 'milter', client: '', from: '', recipients: 0, refusedRecipients: [], durations: {} };

/** An engine that records every call and answers what the test scripted. */
export class FakeEngine implements Engine {
  calls: Call[] = [];
  frontEnds: FrontEnd[] = [];
  mailVerdict: Verdict = { action: 'accept' };
  rcptVerdict: (to: string) => Verdict = () => ({ action: 'accept' });
  endVerdict: (message: Buffer) => EndVerdict = (message) => ({ action: 'accept', edits: { add: [], remove: [] }, message, record });

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
      receive() {
        throw new Error('the milter front end hands the engine whole messages (end(Buffer))');
      },
      // The milter calls only end(Buffer); the sink form is not faked.
      end: (async (message: Buffer) => {
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
