/**
 * The two FUSE servers the read rows compare: a chainfs mount of the
 * replica (`chainfs mount`, a daemon left behind) and qemu-storage-daemon's
 * FUSE export of the qcow2 top (a child of this process), plus page cache
 * control for cold runs. Every mount and daemon is registered with the
 * cleanup, so an interrupted suite leaves none behind.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Cleanup, check, lastLine, run } from './proc';

const READY_TIMEOUT_MS = 30_000;

export function isMounted(mountPoint: string): boolean {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === mountPoint);
}

function fusermountLazy(mountPoint: string): void {
  if (isMounted(mountPoint)) spawnSync('fusermount', ['-uz', mountPoint], { stdio: 'ignore' });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Peak and current resident memory of a process, in bytes (VmHWM, VmRSS). */
export function memoryOf(pid: number): { peak: number; current: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { peak: kb('VmHWM'), current: kb('VmRSS') };
}

/** A chainfs mount of a replica; `volume` is the flat head image inside it. */
export class ChainfsMount {
  readonly volume: string;
  private unregister: (() => void) | undefined;

  constructor(private readonly chainfs: string, private readonly replica: string, readonly mountPoint: string,
    private readonly cleanup: Cleanup) {
    this.volume = path.join(mountPoint, 'volume.img');
  }

  /** `chainfs mount` (returns once the mount is readable); resolves to its wall time in seconds. */
  async mount(): Promise<number> {
    fs.mkdirSync(this.mountPoint, { recursive: true });
    this.unregister = this.cleanup.add(`unmount ${this.mountPoint}`, () => this.unmountSync());
    const r = await run([this.chainfs, 'mount', this.replica, this.mountPoint]);
    if (r.code !== 0) throw new Error(`chainfs mount failed: ${lastLine(r.stderr)}`);
    return r.seconds;
  }

  /** The daemon serving this mount: found by its command line (`chainfs mount REPLICA MP --ready-fd`). */
  daemonPid(): number {
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      let argv: string[];
      try {
        argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      if (argv.includes('mount') && argv.includes(this.mountPoint) && argv.includes('--ready-fd')) return Number(e);
    }
    throw new Error(`no chainfs daemon found for ${this.mountPoint}`);
  }

  async unmount(): Promise<void> {
    const done = this.unregister;
    this.unregister = undefined;
    if (!done) return;
    const r = await run([this.chainfs, 'umount', this.mountPoint]);
    if (r.code !== 0) process.stderr.write(`bench: chainfs umount ${this.mountPoint}: ${lastLine(r.stderr)}\n`);
    done(); // and make sure
  }

  /** For the cleanup: `chainfs umount`, then whatever is left by force. */
  private unmountSync(): void {
    let pid: number | undefined;
    try {
      pid = this.daemonPid();
    } catch {
      pid = undefined;
    }
    if (isMounted(this.mountPoint)) spawnSync(this.chainfs, ['umount', this.mountPoint], { stdio: 'ignore', timeout: 15_000 });
    fusermountLazy(this.mountPoint);
    if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
  }
}

/**
 * `qemu-storage-daemon --export type=fuse` of a qcow2 image: the image
 * appears, flat and raw, on an existing regular file. Both block nodes are
 * read-only; the file node uses the host page cache (the default,
 * cache.direct=off), as chainfs does.
 */
export class QsdExport {
  private pid: number | undefined;
  private unregister: (() => void) | undefined;

  constructor(private readonly qcow2: string, readonly file: string, private readonly size: number,
    private readonly log: string, private readonly cleanup: Cleanup) {}

  async start(): Promise<void> {
    fs.writeFileSync(this.file, '');
    const logFd = fs.openSync(this.log, 'a');
    const child = spawn('qemu-storage-daemon', [
      '--blockdev', `driver=file,node-name=f,filename=${this.qcow2},read-only=on`,
      '--blockdev', 'driver=qcow2,node-name=q,file=f,read-only=on',
      '--export', `type=fuse,id=e,node-name=q,mountpoint=${this.file},writable=off`,
    ], { detached: true, stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    const pid = child.pid;
    if (pid === undefined) throw new Error('qemu-storage-daemon did not start');
    child.unref();
    this.pid = pid;
    this.unregister = this.cleanup.add(`stop qemu-storage-daemon ${pid}`, () => this.stopSync());
    const until = Date.now() + READY_TIMEOUT_MS;
    while (!(isMounted(this.file) && fs.statSync(this.file).size === this.size)) {
      if (!alive(pid)) throw new Error(`qemu-storage-daemon exited: ${lastLine(fs.readFileSync(this.log, 'utf8'))}`);
      if (Date.now() > until) throw new Error('qemu-storage-daemon export did not appear within 30 s');
      await sleep(10);
    }
  }

  async stop(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone
    }
    const until = Date.now() + 10_000;
    while (alive(pid) && Date.now() < until) await sleep(10);
    this.unregister?.();
    this.unregister = undefined;
    this.pid = undefined;
  }

  private stopSync(): void {
    if (this.pid !== undefined && alive(this.pid)) process.kill(this.pid, 'SIGKILL');
    fusermountLazy(this.file);
  }
}

export type ColdMethod = 'drop_caches' | 'fadvise';

/**
 * Empties the page cache for a cold run: all of it (`sync; echo 3 >
 * /proc/sys/vm/drop_caches`) where this process may, else file by file with
 * posix_fadvise(DONTNEED) through `dd iflag=nocache count=0`, which works
 * unprivileged on clean pages. Returns the method it used.
 */
export async function evict(files: string[]): Promise<ColdMethod> {
  await check(['sync']);
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return 'drop_caches';
  } catch {
    for (const f of files) await check(['dd', `if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
    return 'fadvise';
  }
}
