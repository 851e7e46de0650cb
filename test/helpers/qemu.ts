/**
 * Thin wrappers around the real qemu tools (Debian qemu-utils), the oracle
 * for tests. They throw (with qemu's stderr in the message) when the tool
 * exits non-zero.
 */
import { execFileSync } from 'child_process';

/** Runs `qemu-img ARGS...`; returns stdout. */
export function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs `qemu-io -f FMT -c CMD... FILE` (e.g. 'write -P 0xab 0 4k', 'write -z -u 64k 64k'); returns stdout. */
export function qemuIo(file: string, fmt: string, cmds: string[]): string {
  const args = ['-f', fmt];
  for (const c of cmds) args.push('-c', c);
  args.push(file);
  return execFileSync('qemu-io', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** One entry of `qemu-img map --output=json`. */
export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** `qemu-img map --output=json -f FMT FILE`, parsed. */
export function qemuMap(file: string, fmt = 'qcow2'): QemuMapEntry[] {
  return JSON.parse(qemuImg(['map', '--output=json', '-f', fmt, file])) as QemuMapEntry[];
}
