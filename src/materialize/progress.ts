/**
 * The export's progress bar on a terminal (npm cli-progress): phase, bytes
 * done of total, rate and ETA. Callers create it only when stderr is a
 * terminal and the user did not ask for --quiet; it draws at most ten times
 * a second whatever the update rate.
 */
import { SingleBar } from 'cli-progress';
import { formatBytes } from '../units';
import type { JobProgress } from './job';

export class ProgressBar {
  private readonly bar: SingleBar;
  private phase = '';
  private phaseStart = 0;
  private phaseFrom = 0;

  constructor(stream: NodeJS.WriteStream) {
    this.bar = new SingleBar({
      stream,
      format: '{phase} [{bar}] {percentage}% | {value} / {total} | {rate}/s | ETA {eta_formatted}',
      formatValue: (v, _opts, type) => (type === 'value' || type === 'total' ? formatBytes(Number(v)) : String(v)),
      barsize: 30,
      hideCursor: true,
      gracefulExit: false, // our own SIGINT handler removes the partial output first
      fps: 10,
      etaBuffer: 50,
    });
  }

  update(p: JobProgress): void {
    const now = Date.now();
    if (p.phase !== this.phase) {
      if (this.phase) this.bar.stop();
      this.phase = p.phase;
      this.phaseStart = now;
      this.phaseFrom = p.done;
      this.bar.start(Math.max(p.total, 1), p.done, { phase: p.phase.padEnd(8), rate: formatBytes(0) });
      return;
    }
    const seconds = (now - this.phaseStart) / 1000;
    const rate = seconds > 0 ? (p.done - this.phaseFrom) / seconds : 0;
    this.bar.update(p.done, { rate: formatBytes(Math.round(rate)) });
  }

  stop(): void {
    if (this.phase) this.bar.stop();
    this.phase = '';
  }
}
