/**
 * The builder's in-memory picture of a replica: every layer file as a map of
 * 4 KiB blocks, plus the backing image's virtual content. It answers the
 * read-modify-write reads while building, and afterwards tells tests which
 * blocks each file should have allocated and what each view should read.
 * Memory: one Buffer per written block plus the backing content, fine for
 * the tens-of-MiB fixtures tests use.
 */
import type { DiskMeta } from './replica-meta';

/** The engine's mapping and write unit (VolumeSectorSize). */
export const BLOCK = 4096;

export interface ModelLayer {
  /** File name in the replica directory, e.g. `volume-snap-a.img`. */
  file: string;
  /** Apparent size of the file: the volume size when it was the head. */
  size: number;
  /** The `.meta` content as it is on disk (Name may be the old head's, see #13728). */
  meta: DiskMeta;
  /** Allocated 4 KiB blocks by block index, each exactly BLOCK bytes. */
  blocks: Map<number, Buffer>;
}

export class ReplicaModel {
  /** Every layer file in the directory, head and snapshots, including off-chain ones. */
  readonly layers = new Map<string, ModelLayer>();
  /** The live head's file name. */
  head = '';

  /** `backing` is the backing image's virtual content (its length is the virtual size), or null. */
  constructor(readonly backing: Buffer | null) {}

  layer(file: string): ModelLayer {
    const l = this.layers.get(file);
    if (!l) throw new Error(`model has no layer ${file}`);
    return l;
  }

  /** The chain rooted at `file`, newest first, following Parent (removed layers included). */
  chain(file: string): ModelLayer[] {
    const out: ModelLayer[] = [];
    for (let name = file; name !== ''; name = this.layer(name).meta.Parent) {
      if (out.length > this.layers.size) throw new Error(`parent cycle under ${file}`);
      out.push(this.layer(name));
    }
    return out;
  }

  /** File names whose Parent is `file`. */
  children(file: string): string[] {
    return [...this.layers.values()].filter((l) => l.meta.Parent === file).map((l) => l.file);
  }

  /** A fresh copy of block `index` as the view rooted at `file` reads it. */
  readBlock(file: string, index: number): Buffer {
    for (const layer of this.chain(file)) {
      const b = layer.blocks.get(index);
      if (b) return Buffer.from(b);
    }
    const out = Buffer.alloc(BLOCK);
    if (this.backing) this.backing.copy(out, 0, Math.min(index * BLOCK, this.backing.length));
    return out;
  }

  /** The whole flattened view rooted at `file`: its own size, zeros where nothing is allocated. */
  view(file: string): Buffer {
    const size = this.layer(file).size;
    const out = Buffer.alloc(size);
    if (this.backing) this.backing.copy(out, 0, 0, Math.min(size, this.backing.length));
    for (const layer of this.chain(file).reverse()) {
      for (const [index, data] of layer.blocks) {
        if (index * BLOCK < size) data.copy(out, index * BLOCK);
      }
    }
    return out;
  }

  /** Sorted indexes of the 4 KiB blocks `file` must have allocated on disk. */
  allocated(file: string): number[] {
    return [...this.layer(file).blocks.keys()].sort((a, b) => a - b);
  }
}
