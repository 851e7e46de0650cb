/**
 * What every layer backed by one plain file shares (chain files, a raw
 * backing image): the fd, reads straight into the caller's buffer with
 * `pread` (or only from the page cache, or on the thread pool), zeros past
 * the size it had at open, and an error, never zeros, if it got shorter.
 */
import * as fs from 'node:fs';
import { LayerReadError } from '../errors';
import { native } from '../native';
import type { BlockStatus, DirectPiece, Layer } from './layer';

export abstract class FileLayer implements Layer {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly fd: number;

  constructor(fd: number, path: string, name: string, st: fs.Stats) {
    this.fd = fd;
    this.path = path;
    this.name = name;
    this.size = st.size;
    this.allocatedBytes = st.blocks * 512;
  }

  abstract blockStatus(offset: number, length: number): BlockStatus;

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    readFully(this.fd, this.path, this.size, buf, bufOffset, length, position);
  }

  readNoWait(buf: Buffer, bufOffset: number, length: number, position: number): boolean {
    return readCached(this.fd, this.path, this.size, buf, bufOffset, length, position);
  }

  readAsync(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    return readFullyAsync(this.fd, this.path, this.size, buf, bufOffset, length, position);
  }

  /** The file holds the layer at the same offsets; zeros past its size at open. */
  mapDirect(offset: number, length: number, each: DirectPiece): void {
    each(offset, length, this.fd, 0, this.size);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** The error for a layer file that is shorter than it was at open: it is being changed. */
export function shrunk(path: string, was: number, endsBy: number): LayerReadError {
  return new LayerReadError(path, `file was cut short while in use (it ends by ${endsBy}; it had ${was} bytes at open)`);
}

/**
 * pread `n` bytes into buf[at, at+n) from `pos`, or up to the end of the
 * file; returns the bytes read. An I/O error becomes `fail(error, offset)`,
 * so each caller words it (the layer file, the qcow2 structure read).
 */
export function preadUpTo(fd: number, buf: Buffer, at: number, n: number, pos: number,
  fail: (e: unknown, offset: number) => Error): number {
  let got = 0;
  try {
    while (got < n) {
      const r = fs.readSync(fd, buf, at + got, n - got, pos + got);
      if (r === 0) break;
      got += r;
    }
  } catch (e) {
    throw fail(e, pos + got);
  }
  return got;
}

/**
 * pread until `length` bytes are in `buf`; bytes at or past `size` (the
 * size at open) are zeros. A file that ends before `size` was cut short
 * while we read it (a live head, a half-copied file): that is an error, not
 * zeros, so no reader gets torn data before the mount daemon's watch sees it.
 */
function readFully(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
  length: number, position: number): void {
  const inFile = Math.max(0, Math.min(length, size - position));
  const done = preadUpTo(fd, buf, bufOffset, inFile, position, (e, at) =>
    new LayerReadError(path, `read at offset ${at} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`));
  if (done < inFile) throw shrunk(path, size, position + done);
  if (done < length) buf.fill(0, bufOffset + done, bufOffset + length);
}

/** readFully from the page cache only (preadv2 RWF_NOWAIT); false if any part would block. */
function readCached(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
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
function readFullyAsync(fd: number, path: string, size: number, buf: Buffer, bufOffset: number,
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
