/**
 * Write-behind: every few tens of MiB written, ask the kernel to start
 * writing the output's dirty pages to disk (sync_file_range WRITE, which
 * does not wait for the disk). The disk then works while we copy, and the
 * fsync that makes the output durable finds little left to do; without it
 * the whole output is flushed only at the end, after the copying.
 *
 * The request runs on the thread pool (submitting the pages takes a few
 * milliseconds a call), one at a time: bytes written while one runs are
 * counted for the next. A writer awaits idle() before it returns, so that
 * none is running once the output is fsynced, closed or removed.
 */
import { native } from '../native';

const EVERY = 32 << 20;

export class WriteBehind {
  private pending = 0;
  private enabled = true;
  private running: Promise<void> | null = null;

  constructor(private readonly fd: number) {}

  /** Counts `n` bytes written; past the threshold, starts writeback unless a request is still running. */
  wrote(n: number): void {
    this.pending += n;
    if (this.pending < EVERY || !this.enabled || this.running) return;
    this.pending = 0;
    this.running = native.startWritebackAsync(this.fd).then(
      () => { this.running = null; },
      () => {
        this.running = null;
        this.enabled = false; // advisory only (e.g. not a regular file): the final fsync still runs
      },
    );
  }

  /** Resolves when no writeback request is running (never rejects). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }
}
