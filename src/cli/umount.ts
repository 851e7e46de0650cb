/**
 * `chainfs umount MOUNTPOINT` (alias `unmount`): unmounts a chainfs mount
 * (its --files mounts first) and waits for the daemon to exit; clears a
 * stale mount. A busy mount is refused with what holds it (loop devices
 * backed by its files, processes with files or their working directory
 * under it, mounts on it) and how to release it, as fuser/lsof would tell.
 */
import { Command } from 'commander';
import { ChainfsError } from '../errors';
import {
  CHAINFS_FSTYPE, absoluteMountPoint, fusermount, holders, isAlive, isChainfsDaemon, isStale, mountAt, readRecord,
  removeRecord, type Holders,
} from '../fuse/mountpoint';
import { action, warn } from './common';

export function umountCommand(): Command {
  return new Command('umount')
    .alias('unmount')
    .description('unmount a chainfs mount and wait for its daemon to exit (also clears a stale mount)')
    .argument('<mountpoint>')
    .option('-l, --lazy', 'detach now even if busy; the daemon exits when the last user is gone')
    .addHelpText('after', `
A busy mount is named with what holds it: loop devices backed by its files (losetup -d /dev/loopN),
processes with files open under it, mounts on it (--files mounts are taken down first).`)
    .action(action((mp: string, opts: { lazy?: boolean }) => umount(mp, !!opts.lazy)));
}

async function umount(mountPoint: string, lazy: boolean): Promise<void> {
  const mp = absoluteMountPoint(mountPoint);
  const rec = readRecord(mp);
  const entry = mountAt(mp);
  if (!entry && !rec) throw new ChainfsError(mp, 'not mounted (no chainfs mount here)');
  // fusermount -u as root unmounts anything: a mistyped mount point (the
  // file system on the loop device, an NFS share) is not ours to take down.
  if (entry && entry.fsType !== CHAINFS_FSTYPE) {
    throw new ChainfsError(mp, `not a chainfs mount (${entry.fsType} from ${entry.source} is mounted there); unmount it with umount(8)`);
  }
  if (entry) {
    const { FILES_DIR, unmountFiles } = await import('./files');
    if (!lazy) {
      // Asked first: a busy mount is refused before anything (a --files mount) is taken down.
      const h = withoutOwnFiles(holders(mp), `${mp}/${FILES_DIR}/`);
      if (h.loops.length + h.processes.length + h.submounts.length > 0) throw new ChainfsError(mp, busyMessage(h));
    }
    // --files: the fuse2fs mounts on MP/files/... hold the images open; they go first.
    const left = await unmountFiles(mp, lazy);
    if (left.length > 0) throw new ChainfsError(mp, busyMessage(holders(mp)));
    const stale = isStale(mp);
    const r = fusermount([lazy || stale ? '-uz' : '-u', mp]);
    if (!r.ok) {
      const busy = /busy/i.test(r.message);
      throw new ChainfsError(mp, busy ? busyMessage(holders(mp)) : `unmount failed: ${r.message}`);
    }
  }
  // The daemon notices the unmount by itself within a second; SIGTERM makes
  // it exit now. A lazy unmount leaves it serving the files still open.
  if (!lazy && rec && isAlive(rec.pid) && isChainfsDaemon(rec.pid)) {
    process.kill(rec.pid, 'SIGTERM');
    if (!(await waitExit(rec.pid, 10_000))) warn(`daemon ${rec.pid} did not exit after SIGTERM`);
  }
  // The daemon removes its own log at a clean exit; the log of one that
  // died (a stale mount) is kept: it says why.
  if (rec && !isAlive(rec.pid)) removeRecord(mp, rec.pid);
}

/** The holders that are not the mount's own --files mounts (under `filesDir`) and their fuse2fs processes. */
function withoutOwnFiles(h: Holders, filesDir: string): Holders {
  return {
    loops: h.loops,
    processes: h.processes.filter((p) => p.command !== 'fuse2fs'),
    submounts: h.submounts.filter((m) => !m.startsWith(filesDir)),
  };
}

/**
 * `mount point is busy: /dev/loop3 is backed by MP/volume.img (losetup -d
 * /dev/loop3); process 812 (qemu-img) has MP/x.img open; ...; close them,
 * or use --lazy`.
 */
export function busyMessage(h: Holders): string {
  const what: string[] = [];
  for (const l of h.loops) what.push(`${l.device} is backed by ${l.file} (detach it: losetup -d ${l.device})`);
  for (const m of h.submounts) what.push(`${m} is mounted on it (umount ${m})`);
  for (const p of h.processes.slice(0, 5)) {
    what.push(`process ${p.pid} (${p.command}) ${p.how === 'open' ? `has ${p.path} open` : `${p.how === 'cwd' ? 'works in' : 'has its root in'} ${p.path}`}`);
  }
  if (h.processes.length > 5) what.push(`${h.processes.length - 5} more processes`);
  if (what.length === 0) {
    // Root sees every process's files: nothing found then means requests in
    // flight (an `ls` or a read under way) rather than someone else's.
    if (process.getuid?.() === 0) return 'mount point is busy: no process holds a file of it, so requests are in flight (a listing or a read under way); try again in a moment, or unmount with --lazy';
    return 'mount point is busy (a process is using it, perhaps as another user: try as root to see which); close it, or unmount with --lazy';
  }
  return `mount point is busy: ${what.join('; ')}; release them, or unmount with --lazy (detaches now, ends when the last user is gone)`;
}

async function waitExit(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
