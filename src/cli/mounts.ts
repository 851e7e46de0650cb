/**
 * `chainfs mounts [--json]`: this host's chainfs mounts, from the daemons'
 * records in the run directory (/run/chainfs as root): mount point,
 * source, daemon pid, since when, log file, and a state: `mounted`,
 * `stale` (the daemon is gone: `chainfs umount` clears it) or `gone`
 * (neither: a leftover record, removed by `chainfs umount`). Chainfs mounts
 * with no record here (made by another user, whose records are in their
 * own run directory) are listed from /proc/self/mountinfo, with what it
 * tells: pid, since and log are unknown (null).
 */
import { Command } from 'commander';
import { chainfsMounts, isAlive, listRecords, mountAt } from '../fuse/mountpoint';
import { action } from './common';
import { table } from '../text';

/** One mount as `mounts --json` prints it (docs/json.md). */
export interface MountListing {
  mountPoint: string;
  source: string;
  /** The daemon; null when the mount has no record here (another user's). */
  pid: number | null;
  /** ISO 8601 UTC; null without a record. */
  since: string | null;
  /** '' when the daemon logs to a terminal (-f); null without a record. */
  log: string | null;
  state: 'mounted' | 'stale' | 'gone';
}

export function mountsCommand(): Command {
  return new Command('mounts')
    .description("list this host's chainfs mounts: mount point, source, pid, since, log file")
    .option('--json', 'machine-readable output (docs/json.md)')
    .action(action((opts: { json?: boolean }) => {
      const list: MountListing[] = listRecords().map((r) => {
        const alive = isAlive(r.pid);
        const mounted = !!mountAt(r.mountPoint);
        return {
          mountPoint: r.mountPoint, source: r.replica, pid: r.pid, since: r.since, log: r.log,
          state: alive && mounted ? 'mounted' : mounted ? 'stale' : 'gone',
        };
      });
      const known = new Set(list.map((m) => m.mountPoint));
      for (const m of chainfsMounts().filter((x) => !known.has(x.mountPoint))) {
        known.add(m.mountPoint);
        list.push({ mountPoint: m.mountPoint, source: m.source.replace(/^chainfs:/, ''), pid: null, since: null, log: null, state: 'mounted' });
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      if (list.length === 0) return;
      const rows = list.map((m) => [m.mountPoint, m.source, m.pid === null ? '?' : String(m.pid), m.since?.replace(/\.\d+Z$/, 'Z') ?? '?', m.state, m.log || '-']);
      process.stdout.write(`${table([['MOUNT POINT', 'SOURCE', 'PID', 'SINCE', 'STATE', 'LOG'], ...rows])}\n`);
    }));
}
