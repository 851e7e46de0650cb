/**
 * Write-behind: every few tens of MiB written, ask the kernel to start
 * writing the output's dirty pages to disk (sync_file_range WRITE, which
 * does not wait). The disk then works while we copy, and the fsync that
 * makes the output durable finds little left to do; without it the whole
 * output is flushed only at the end, after the copying.
 */
import { native } from '../native';

const EVERY = 32 << 20;

export class WriteBehind {
  private pending = 0;
  private enabled = true;

  constructor(private readonly fd: number) {}

  /** Counts `n` bytes written; past the threshold, starts writeback. */
  wrote(n: number): void {
    this.pending += n;
    if (this.pending < EVERY || !this.enabled) return;
    this.pending = 0;
    try {
      native.startWriteback(this.fd);
    } catch {
      this.enabled = false; // advisory only (e.g. not a regular file): the final fsync still runs
    }
  }
}
