// The message part (../shared/architecture.json "Message"): message bytes every layer may use —
// line endings, the header/body split, header fields, the From reader, header edits.
// Owns nothing itself; it is the folder's one import point. Must not import pipeline/, signing/,
// relay/ or smtp/ (they all import it).

export * from './message.ts';
export * from './line-endings.ts';
export * from './header-edits.ts';
export * from './message-sink.ts';
export * from './spill-directory.ts';
export { releaseMemoryWhenIdle, type IdleReleaseOptions } from './garbage.ts';
