// Running a child without a capability root would otherwise use, so a test as root meets the
// refusal an ordinary user meets, while the child stays the owner of the checkout: it can read the
// code even from a 0700 directory (a home, /root, mktemp -d), which a drop to nobody could not.
// Must not: change the test process's own privileges.

/**
 * The command and arguments that run `command args` without `capabilities` (names as setpriv
 * takes them: net_bind_service, dac_override, …): as root, through util-linux's setpriv with
 * those dropped from the bounding set (root's permitted set after exec); as anyone else, as is,
 * since an ordinary user has none of them.
 */
export function withoutCapabilities(capabilities: readonly string[], command: string, args: readonly string[]): [string, string[]] {
  if (process.getuid?.() !== 0 || capabilities.length === 0) return [command, [...args]];
  const dropped = capabilities.map((capability) => `-${capability}`).join(',');
  return ['setpriv', ['--bounding-set', dropped, '--inh-caps', dropped, '--', command, ...args]];
}
