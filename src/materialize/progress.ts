/**
 * Progress of a long copy (export, cat) on stderr, as qemu-img convert -p
 * shows it: a bar on a terminal (npm cli-progress, at most ten draws a
 * second), and on anything else (a log file, a pipe) one line per step:
 * `export   42% (6.7 MiB / 16.0 MiB)`, at most one a second and one per
 * whole percent, plus the first and the last, so a log of a 60 s export
 * shows it moving and a 1 s one shows 0% and 100%.
 *
 * The total is the view's size whatever the format: `done` is how far
 * into the view the copy is (holes count as done once passed). A rate and
 * an ETA appear only once something was measured: never "ETA 0s" at 0%.
 */
// cli-progress is loaded only when a bar is drawn (a terminal): -q and -p start faster without it.
import type { SingleBar } from 'cli-progress';
import { formatBytes } from '../units';
import type { JobProgress } from './job';

/** What export and cat drive; `stop` ends the display (idempotent). */
export interface Progress {
  update(p: JobProgress): void;
  stop(): void;
}

/**
 * The display for `stream`, or none: a bar on a terminal, lines elsewhere.
 * `wanted` is the command's decision (export: unless --quiet, and on a
 * non-terminal only with -p; cat: only with -p).
 */
export function progressFor(stream: NodeJS.WriteStream, wanted: boolean): Progress | undefined {
  if (!wanted) return undefined;
  return stream.isTTY ? new ProgressBar(stream) : new ProgressLines(stream);
}

/** Rate and ETA of the current phase, from its start: `--` until something moved. */
class Speed {
  private start = 0;
  private from = 0;

  reset(done: number): void {
    this.start = Date.now();
    this.from = done;
  }

  /** Bytes a second (0 until measured) and the ETA text. */
  measure(done: number, total: number): { rate: number; eta: string } {
    const seconds = (Date.now() - this.start) / 1000;
    const moved = done - this.from;
    if (seconds < 0.5 || moved <= 0) return { rate: 0, eta: '--' };
    const rate = moved / seconds;
    return { rate, eta: formatSeconds(Math.max(0, total - done) / rate) };
  }
}

/** `42s`, `3m07s`, `1h02m`. */
export function formatSeconds(s: number): string {
  const n = Math.round(s);
  if (n < 60) return `${n}s`;
  if (n < 3600) return `${Math.floor(n / 60)}m${String(n % 60).padStart(2, '0')}s`;
  return `${Math.floor(n / 3600)}h${String(Math.floor((n % 3600) / 60)).padStart(2, '0')}m`;
}

export class ProgressBar implements Progress {
  private readonly bar: SingleBar;
  private phase = '';
  private readonly speed = new Speed();

  constructor(stream: NodeJS.WriteStream) {
    this.bar = new (require('cli-progress') as typeof import('cli-progress')).SingleBar({
      stream,
      format: '{phase} [{bar}] {percentage}% | {value} / {total} | {rate}/s | ETA {eta_text}',
      formatValue: (v, _opts, type) => (type === 'value' || type === 'total' ? formatBytes(Number(v)) : String(v)),
      barsize: 30,
      hideCursor: true,
      gracefulExit: false, // our own SIGINT handler removes the partial output first
      fps: 10,
    });
  }

  update(p: JobProgress): void {
    if (p.phase !== this.phase) {
      if (this.phase) this.bar.stop();
      this.phase = p.phase;
      this.speed.reset(p.done);
      this.bar.start(Math.max(p.total, 1), p.done, { phase: p.phase.padEnd(8), rate: formatBytes(0), eta_text: '--' });
      return;
    }
    const { rate, eta } = this.speed.measure(p.done, p.total);
    this.bar.update(p.done, { rate: formatBytes(Math.round(rate)), eta_text: eta });
  }

  stop(): void {
    if (this.phase) this.bar.stop();
    this.phase = '';
  }
}

/** Minimum time between two lines, unless the phase ends. */
const LINE_INTERVAL_MS = 1000;

export class ProgressLines implements Progress {
  private phase = '';
  private lastPercent = -1;
  private lastAt = 0;
  private last: JobProgress | undefined;
  private readonly speed = new Speed();

  constructor(private readonly stream: NodeJS.WritableStream) {}

  update(p: JobProgress): void {
    const percent = p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100;
    const now = Date.now();
    const newPhase = p.phase !== this.phase;
    if (newPhase) {
      this.finishPhase();
      this.phase = p.phase;
      this.speed.reset(p.done);
    }
    this.last = p;
    const due = newPhase || (percent > this.lastPercent && (now - this.lastAt >= LINE_INTERVAL_MS || percent === 100));
    if (!due) return;
    this.print(p, percent);
  }

  stop(): void {
    this.finishPhase();
    this.phase = '';
  }

  /** The phase's last state, if it was not the last line printed (100% is always shown). */
  private finishPhase(): void {
    const p = this.last;
    this.last = undefined;
    if (!p) return;
    const percent = p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100;
    if (percent !== this.lastPercent) this.print(p, percent);
    this.lastPercent = -1;
  }

  private print(p: JobProgress, percent: number): void {
    this.lastPercent = percent;
    this.lastAt = Date.now();
    const { rate, eta } = this.speed.measure(p.done, p.total);
    const speed = rate > 0 ? `, ${formatBytes(Math.round(rate))}/s, ETA ${eta}` : '';
    this.stream.write(`${p.phase.padEnd(8)} ${String(percent).padStart(3)}% (${formatBytes(p.done)} / ${formatBytes(p.total)}${speed})\n`);
  }
}
