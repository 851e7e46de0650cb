/**
 * Child processes for the suite: every command runs in its own process
 * group so that an interrupt can end a whole pipeline, its wall time is
 * measured here, and its stderr is kept for the "n/a (error ...)" cells.
 * Cleanup steps (unmount, stop a daemon, remove data) are registered as
 * they become necessary and run once, last registered first, on a normal
 * exit, an error or a signal.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export interface RunOptions {
  /** Where stdout goes: a file descriptor (e.g. /dev/null), or 'pipe' to keep it (small outputs only). */
  stdout?: number | 'pipe';
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Wall time from spawn to exit, in seconds. */
  seconds: number;
  stdout: string;
  stderr: string;
}

const running = new Set<number>();
const KEEP = 64 * 1024;

/** Runs `argv`; resolves when it exits, whatever its status. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true, // its own process group: see killRunning()
      stdio: ['ignore', opts.stdout ?? 'ignore', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => { if (stdout.length < KEEP) stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { if (stderr.length < KEEP) stderr += d.toString(); });
    child.on('error', reject);
    if (child.pid !== undefined) running.add(child.pid);
    child.on('close', (code, signal) => {
      if (child.pid !== undefined) running.delete(child.pid);
      resolve({ code, signal, seconds: Number(process.hrtime.bigint() - start) / 1e9, stdout, stderr });
    });
  });
}

/** Runs a bash script (pipes, `&&`) with pipefail. */
export function sh(script: string, opts: RunOptions = {}): Promise<RunResult> {
  return run(['bash', '-c', `set -o pipefail; ${script}`], opts);
}

/** Runs `argv` and throws with its stderr unless it exits 0. */
export async function check(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.signal ?? `exit ${r.code}`}): ${lastLine(r.stderr)}`);
  return r;
}

/** The last non-empty line of a tool's stderr: enough to say why it failed. */
export function lastLine(text: string): string {
  const lines = text.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1].slice(0, 200) : 'no message';
}

/** Ends every command still running (and its pipeline). */
export function killRunning(): void {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}

/** The value of a one-line command, or '' (for versions in the report). */
export function firstLineOf(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout || r.stderr).trim().split('\n')[0] : '';
}

type Step = { name: string; fn: () => void };

/** Registered cleanup steps; each is synchronous so that a signal handler can run them all. */
export class Cleanup {
  private steps: Step[] = [];
  private done = false;

  /** Registers `fn`; returns a function that runs it now and unregisters it. */
  add(name: string, fn: () => void): () => void {
    const step = { name, fn };
    this.steps.push(step);
    return () => {
      this.steps = this.steps.filter((s) => s !== step);
      fn();
    };
  }

  runAll(): void {
    if (this.done) return;
    this.done = true;
    killRunning();
    for (const s of this.steps.reverse()) {
      try {
        s.fn();
      } catch (e) {
        process.stderr.write(`bench: cleanup (${s.name}) failed: ${(e as Error).message}\n`);
      }
    }
    this.steps = [];
  }

  /** Runs every step on SIGINT/SIGTERM/SIGHUP and exits 128+signal; also on a normal exit. */
  installSignalHandlers(): void {
    const codes: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
    for (const sig of Object.keys(codes) as NodeJS.Signals[]) {
      process.on(sig, () => {
        process.stderr.write(`\nbench: ${sig}: cleaning up mounts, daemons and data\n`);
        this.runAll();
        process.exit(codes[sig]);
      });
    }
    process.on('exit', () => this.runAll());
  }
}

/** rm -rf, without complaint if it is already gone. */
export function remove(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}
