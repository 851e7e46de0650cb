/**
 * Read-ahead for the writers: the data runs a writer will copy next are
 * announced to their layer files (posix_fadvise WILLNEED, on the thread
 * pool), up to DISTANCE bytes of the view ahead of where it is, each byte
 * once. The writers map a batch of layer data at a time (MAP_POPULATE),
 * which on a cold page cache reads it synchronously, one batch after the
 * other; announced, the disk reads the next batches while this one is
 * scanned and written. On a warm cache an announcement costs a page-cache
 * lookup per page, on the pool.
 */
import type { ResolvedRun } from '../chain/source';
import { native } from '../native';
import { bytesInFile, directPieces } from './direct-copy';

/** How far ahead of the writer data is announced (view bytes). */
const DISTANCE = 64 << 20;
/** Announcements are made in steps of at least this much, to keep the calls few. */
const STEP = 8 << 20;

export class ReadAhead {
  private runs: readonly ResolvedRun[] = [];
  private next = 0; // index of the first run not wholly announced
  private announced = 0; // view offset up to which data is announced
  private readonly pending = new Set<Promise<void>>();

  /** The data runs (layer !== null, in order) the writer goes through next, e.g. one scan window's. */
  reset(runs: readonly ResolvedRun[]): void {
    this.runs = runs;
    this.next = 0;
    this.announced = runs.length ? runs[0].offset : 0;
  }

  /** The writer is at view offset `pos`: announce the runs up to pos + DISTANCE. */
  at(pos: number): void {
    if (this.announced - pos >= DISTANCE - STEP) return; // still well ahead
    const to = pos + DISTANCE;
    while (this.next < this.runs.length) {
      const r = this.runs[this.next];
      const from = Math.max(r.offset, this.announced);
      if (from >= to) break;
      const end = Math.min(r.offset + r.length, to);
      if (end > from && r.layer) this.announce(r, from, end);
      this.announced = Math.max(this.announced, end);
      if (end < r.offset + r.length) break;
      this.next++;
    }
  }

  /** Resolves when no announcement is running (the layer files may then be closed). */
  async idle(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  private announce(r: ResolvedRun, from: number, end: number): void {
    const pieces = directPieces([{ offset: from, length: end - from, layer: r.layer }]);
    if (!pieces) return;
    for (const p of pieces) {
      const length = bytesInFile(p);
      if (length <= 0) continue;
      const done: Promise<void> = native.willNeedAsync(p.fd, p.offset + p.delta, length).then(() => {
        this.pending.delete(done);
      });
      this.pending.add(done);
    }
  }
}
