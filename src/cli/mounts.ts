/**
 * `chainfs mounts [--json]`: this host's chainfs mounts (of this user; all
 * of them as root), from the daemons' records in the run directory
 * (/run/chainfs as root): mount point, source, daemon pid, since when, log
 * file, and a state: `mounted`, `stale` (the daemon is gone: `chainfs
 * umount` clears it) or `gone` (neither: a leftover record, removed by
 * `chainfs umount`).
 */
import { Command } from 'commander';
import { isAlive, listRecords, mountAt } from '../fuse/mountpoint';
import { action } from './common';
import { table } from '../text';

/** One mount as `mounts --json` prints it (docs/json.md). */
export interface MountListing {
  mountPoint: string;
  source: string;
  pid: number;
  /** ISO 8601 UTC. */
  since: string;
  /** '' when the daemon logs to a terminal (-f). */
  log: string;
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
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      if (list.length === 0) return;
      const rows = list.map((m) => [m.mountPoint, m.source, String(m.pid), m.since.replace(/\.\d+Z$/, 'Z'), m.state, m.log || '-']);
      process.stdout.write(`${table([['MOUNT POINT', 'SOURCE', 'PID', 'SINCE', 'STATE', 'LOG'], ...rows])}\n`);
    }));
}
