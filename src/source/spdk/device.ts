/**
 * Opening a v2 disk read-only: an image file or a block device, its size,
 * and whether a block device looks in use (mounted, held by a device-mapper
 * or md holder, or open for writing by another process — SPDK's aio bdev
 * opens it O_RDWR|O_DIRECT).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../../errors';

export interface Device {
  path: string;
  fd: number;
  size: number;
  isBlockDevice: boolean;
  /** Stat at open (size, mtime) for `changed()`. */
  stat: fs.Stats;
}

/** Opens `file` O_RDONLY|O_NOFOLLOW. Throws ChainfsError when it is not a regular file or block device. */
export function openDevice(file: string): Device {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    throw fsError(file, e, 'cannot open');
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isFile()) return { path: file, fd, size: st.size, isBlockDevice: false, stat: st };
    if (st.isBlockDevice()) return { path: file, fd, size: blockDeviceSize(file, st.rdev), isBlockDevice: true, stat: st };
    throw new ChainfsError(file, 'is neither a regular file nor a block device');
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function majorMinor(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 1048576) & ~0xff);
  return `${major}:${minor}`;
}

/** Bytes of a block device, from /sys/dev/block/M:m/size (512-byte sectors). */
function blockDeviceSize(file: string, rdev: number): number {
  try {
    return Number(fs.readFileSync(`/sys/dev/block/${majorMinor(rdev)}/size`, 'utf8').trim()) * 512;
  } catch (e) {
    throw fsError(file, e, 'cannot read the block device size from /sys');
  }
}

/**
 * Why the block device looks in use, or undefined: mounted (/proc/self/mountinfo),
 * held (/sys holders: device-mapper, md), or open for writing by another
 * process (/proc/PID/fdinfo flags; processes we may not look into are skipped).
 */
export function deviceInUse(dev: Device): string | undefined {
  const mm = majorMinor(dev.stat.rdev);
  try {
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[2] === mm) return `it is mounted on ${f[4]}`;
    }
  } catch { /* no /proc: nothing to say */ }
  try {
    const holders = fs.readdirSync(`/sys/dev/block/${mm}/holders`);
    if (holders.length > 0) return `it is held by ${holders.join(', ')}`;
  } catch { /* no holders directory */ }
  return openForWriting(dev.stat.rdev);
}

function openForWriting(rdev: number): string | undefined {
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const st = fs.statSync(`/proc/${pid}/fd/${fd}`);
        if (!st.isBlockDevice() || st.rdev !== rdev) continue;
        const flags = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
        if (flags && (parseInt(flags[1], 8) & 3) !== 0) {
          const comm = readComm(pid);
          return `process ${pid}${comm ? ` (${comm})` : ''} has it open for writing`;
        }
      } catch { /* gone, or not ours to see */ }
    }
  }
  return undefined;
}

function readComm(pid: string): string {
  try {
    return fs.readFileSync(path.join('/proc', pid, 'comm'), 'utf8').trim();
  } catch {
    return '';
  }
}

/** Cheap: whether the first 8 bytes of `file` (a regular file or block device) are `SPDKBLOB`. */
export function hasSignature(file: string): boolean {
  let fd = -1;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) return false;
    const b = Buffer.alloc(8);
    return fs.readSync(fd, b, 0, 8, 0) === 8 && b.toString('latin1') === 'SPDKBLOB';
  } catch {
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
