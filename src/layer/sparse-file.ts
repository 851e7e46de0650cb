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
import { alignDown, alignUp, type BlockStatus, type Layer } from './layer';

export class SparseFileLayer implements Layer {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly fd: number;
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
    this.fd = fd;
    this.path = path;
    this.name = name;
    this.size = st.size;
    this.allocatedBytes = st.blocks * 512;
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

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    readFully(this.fd, this.path, this.size, buf, bufOffset, length, position);
  }

  readNoWait(buf: Buffer, bufOffset: number, length: number, position: number): boolean {
    return readCached(this.fd, this.path, this.size, buf, bufOffset, length, position);
  }

  readAsync(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    return readFullyAsync(this.fd, this.path, this.size, buf, bufOffset, length, position);
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

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** The error for a layer file that is shorter than it was at open: it is being changed. */
function shrunk(path: string, was: number, endsBy: number): LayerReadError {
  return new LayerReadError(path, `file was cut short while in use (it ends by ${endsBy}; it had ${was} bytes at open)`);
}

/**
 * pread until `length` bytes are in `buf`; bytes at or past `size` (the
 * size at open) are zeros. A file that ends before `size` was cut short
 * while we read it (a live head, a half-copied file): that is an error, not
 * zeros, so no reader gets torn data before the mount daemon's watch sees it.
 */
export function readFully(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
  length: number, position: number): void {
  const inFile = Math.max(0, Math.min(length, size - position));
  let done = 0;
  try {
    while (done < inFile) {
      const n = fs.readSync(fd, buf, bufOffset + done, inFile - done, position + done);
      if (n === 0) break;
      done += n;
    }
  } catch (e) {
    throw new LayerReadError(path, `read at offset ${position + done} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (done < inFile) throw shrunk(path, size, position + done);
  if (done < length) buf.fill(0, bufOffset + done, bufOffset + length);
}

/** readFully from the page cache only (preadv2 RWF_NOWAIT); false if any part would block. */
export function readCached(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
  length: number, position: number): boolean {
  const inFile = Math.max(0, Math.min(length, size - position));
  let done = 0;
  while (done < inFile) {
    let n: number;
    try {
      n = native.preadNoWait(fd, buf, bufOffset + done, inFile - done, position + done);
    } catch (e) {
      throw new LayerReadError(path, `read at offset ${position + done} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (n < 0) return false;
    if (n === 0) throw shrunk(path, size, position + done);
    done += n;
  }
  if (done < length) buf.fill(0, bufOffset + done, bufOffset + length);
  return true;
}

/** readFully on the libuv thread pool. */
export function readFullyAsync(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
  length: number, position: number): Promise<void> {
  const inFile = Math.max(0, Math.min(length, size - position));
  return new Promise((resolve, reject) => {
    let done = 0;
    const next = (err: NodeJS.ErrnoException | null, n: number) => {
      if (err) {
        reject(new LayerReadError(path, `read at offset ${position + done} failed: ${err.code ?? err.message}`));
        return;
      }
      done += n;
      if (n > 0 && done < inFile) {
        fs.read(fd, buf, bufOffset + done, inFile - done, position + done, next);
        return;
      }
      if (done < inFile) {
        reject(shrunk(path, size, position + done));
        return;
      }
      if (done < length) buf.fill(0, bufOffset + done, bufOffset + length);
      resolve();
    };
    if (inFile === 0) next(null, 0);
    else fs.read(fd, buf, bufOffset, inFile, position, next);
  });
}
