// The engine part (../shared/architecture.json "Pipeline" and "Session"): what front ends and the
// composition root import. Owns nothing itself. Must not import a front end (smtp/, milter/) or relay/.

export type { ClientFacts, DeliveryReport, EndVerdict, Engine, EngineSession, FrontEnd, HeaderEdits, SessionRole, Verdict } from './session.ts';
export { TransactionEngine, type EngineDependencies } from './engine.ts';
export type { DecisionRecord } from './decision-record.ts';
export { DECISION_RECORD_VERSION } from './decision-record.ts';
export { MessagePipeline, type ArcSealOutcome, type PreparedMessage } from './transaction.ts';
export { InboundChecks, type SpfEvaluation } from './inbound.ts';
