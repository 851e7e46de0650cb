/**
 * A raw backing image: the opaque base of a chain. The engine never looks at
 * its allocation (it is layer index 1, the default owner), so nothing below
 * it is ever consulted: its holes and everything past its end read as zeros.
 * We still ask SEEK_DATA/SEEK_HOLE, so that holes are reported as `zero` and
 * an export does not allocate them.
 */
import * as fs from 'node:fs';
import { LayerReadError } from '../errors';
import { native } from '../native';
import { type BlockStatus, type Layer } from './layer';
import { readCached, readFully, readFullyAsync } from './sparse-file';

export class RawImageLayer implements Layer {
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

  blockStatus(offset: number, length: number): BlockStatus {
    if (offset >= this.size) return { kind: 'zero', length: Math.max(length, 1) };
    try {
      const data = native.seekData(this.fd, offset);
      if (data < 0) return { kind: 'zero', length: this.size - offset };
      if (data > offset) return { kind: 'zero', length: data - offset };
      const hole = native.seekHole(this.fd, offset);
      return { kind: 'data', length: (hole < 0 ? this.size : Math.min(hole, this.size)) - offset || 1 };
    } catch (e) {
      throw new LayerReadError(this.path, `cannot map extents (${(e as Error).message})`);
    }
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

  close(): void {
    fs.closeSync(this.fd);
  }
}
