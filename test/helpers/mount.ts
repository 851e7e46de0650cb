/**
 * Real mounts for tests: the daemon runs as its own process (the real CLI);
 * a FUSE server and a synchronous reader in one process would deadlock.
 * Every mount made here is unmounted by `unmountAll`, also after failures.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chainfs } from './cli';

const mounted = new Set<string>();

export function mountReplica(dir: string, mountPoint: string, extra: string[] = []): void {
  fs.mkdirSync(mountPoint, { recursive: true });
  const r = chainfs(['mount', dir, mountPoint, ...extra]);
  if (r.code !== 0) throw new Error(`chainfs mount failed (${r.code}): ${r.stderr}`);
  mounted.add(mountPoint);
}

export function unmount(mountPoint: string): void {
  const r = chainfs(['umount', mountPoint]);
  mounted.delete(mountPoint);
  if (r.code !== 0) throw new Error(`chainfs umount failed (${r.code}): ${r.stderr}`);
}

/** Best effort, for afterAll/afterEach: leaves no mount and no daemon behind. */
export function unmountAll(): void {
  for (const mp of mounted) {
    chainfs(['umount', mp]);
    spawnSync('fusermount', ['-uz', mp]);
  }
  mounted.clear();
}

/** The pid of the daemon serving `mountPoint` (from its pid record). */
export function daemonPid(mountPoint: string): number {
  const dir = fs.existsSync('/run/chainfs') ? '/run/chainfs' : '';
  const rec = JSON.parse(fs.readFileSync(path.join(dir, `${encodeURIComponent(fs.realpathSync(mountPoint))}.json`), 'utf8'));
  return rec.pid as number;
}

export function isMounted(mountPoint: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mountPoint);
}

/** `cmp` exit status: 0 equal, 1 different. */
export function cmp(a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
