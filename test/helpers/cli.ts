/** Runs the real CLI (bin/chainfs) as its own process, as a user would. */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as path from 'node:path';

export const CHAINFS = path.resolve(__dirname, '..', '..', 'bin', 'chainfs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export function chainfs(args: string[], opts: SpawnSyncOptions = {}): CliResult {
  const r = spawnSync(CHAINFS, args, {
    maxBuffer: 1 << 30, timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'], ...opts,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout as Buffer, stderr: String(r.stderr) };
}

/** Runs and expects exit 0; returns stdout. */
export function chainfsOk(args: string[], opts: SpawnSyncOptions = {}): Buffer {
  const r = chainfs(args, opts);
  if (r.code !== 0) throw new Error(`chainfs ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr}`);
  return r.stdout;
}
