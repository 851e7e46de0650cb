/**
 * A raw backing image: the opaque base of a chain. The engine never looks at
 * its allocation (it is layer index 1, the default owner), so nothing below
 * it is ever consulted: its holes and everything past its end read as zeros.
 * We still ask SEEK_DATA/SEEK_HOLE, so that holes are reported as `zero` and
 * an export does not allocate them.
 */
import { LayerReadError } from '../errors';
import { native } from '../native';
import type { BlockStatus } from './layer';
import { FileLayer } from './file-layer';

export class RawImageLayer extends FileLayer {
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
}
