/**
 * A chain member: a sparse raw file (`volume-head-NNN.img`, `volume-snap-X.img`).
 * Its allocation is its metadata: an allocated extent is `data` even when it
 * holds zeros, a hole is `absent` (look below), and so is everything at or
 * past the file's size. Extents come from SEEK_DATA/SEEK_HOLE, rounded
 * outward to 4 KiB as the engine's FIEMAP map is.
 */
import * as fs from 'node:fs';
import { LayerReadError } from '../errors';
import { native } from '../native';
import { FileLayer, shrunk } from './file-layer';
import { alignDown, alignUp, type BlockStatus } from './layer';

export class SparseFileLayer extends FileLayer {
  /** mtime at open: a chain file whose size or mtime moves is being written to. */
  readonly mtimeMs: number;
  /** Blocks at or past this offset are absent (the file's size rounded up to 4 KiB). */
  private readonly end: number;
  // A one-entry memo of the last answer, so that sequential lookups (and the
  // many empty layers of a long chain) cost no syscall: [from, to) is known
  // to be all absent or all data.
  private memoFrom = 0;
  private memoTo = 0;
  private memoKind: 'data' | 'absent' = 'absent';

  constructor(fd: number, path: string, name: string, st: fs.Stats) {
    super(fd, path, name, st);
    this.mtimeMs = st.mtimeMs;
    this.end = alignUp(st.size);
  }

  blockStatus(offset: number, length: number): BlockStatus {
    if (offset >= this.end) return { kind: 'absent', length: Math.max(length, 1) };
    if (offset >= this.memoFrom && offset < this.memoTo) {
      return { kind: this.memoKind, length: this.memoTo - offset };
    }
    const from = alignDown(offset);
    let data: number;
    try {
      data = native.seekData(this.fd, from);
    } catch (e) {
      throw new LayerReadError(this.path, `cannot map extents (${(e as Error).message})`);
    }
    if (data < 0 || alignDown(data) >= this.end) {
      // No data up to EOF, or EOF moved under us: a file cut short must not read as "look below".
      if (data < 0) this.checkNotShorter();
      return this.remember(offset, this.end, 'absent');
    }
    const dataStart = alignDown(data);
    if (dataStart > offset) return this.remember(offset, dataStart, 'absent');
    let hole: number;
    try {
      hole = native.seekHole(this.fd, data);
    } catch (e) {
      throw new LayerReadError(this.path, `cannot map extents (${(e as Error).message})`);
    }
    // The file may have shrunk between the two calls: -1 means past EOF.
    const dataEnd = Math.min(alignUp(hole < 0 ? data + 1 : hole), this.end);
    return this.remember(offset, dataEnd, 'data');
  }

  /** Throws if the file is now shorter than at open (one fstat; only on the no-more-data path). */
  private checkNotShorter(): void {
    let size: number;
    try {
      size = fs.fstatSync(this.fd).size;
    } catch (e) {
      throw new LayerReadError(this.path, `cannot stat (${(e as Error).message})`);
    }
    if (size < this.size) throw shrunk(this.path, this.size, size);
  }

  private remember(offset: number, to: number, kind: 'data' | 'absent'): BlockStatus {
    this.memoFrom = alignDown(offset);
    this.memoTo = to;
    this.memoKind = kind;
    return { kind, length: to - offset };
  }

  /** Why the file no longer looks as it did at open (size or mtime moved), or undefined. */
  changed(): string | undefined {
    try {
      const st = fs.fstatSync(this.fd);
      if (st.size !== this.size) return `size changed from ${this.size} to ${st.size}`;
      if (st.mtimeMs !== this.mtimeMs) return 'modified (mtime changed)';
      return undefined;
    } catch (e) {
      return `cannot stat: ${(e as Error).message}`;
    }
  }
}

