/**
 * Views of a replica: the head or any snapshot, each a Chain over the layer
 * files of its own chain plus the backing image. Layer files are opened once
 * per replica and shared by every view that uses them.
 */
import * as fs from 'node:fs';
import { Chain, type ChainOptions } from '../../chain/chain';
import { ChainfsError } from '../../errors';
import type { Layer } from '../../layer/layer';
import { openImage, type ImageFormat } from '../../layer/open-image';
import { SparseFileLayer } from '../../layer/sparse-file';
import { openRegularReadOnly } from './files';
import type { Disk, Replica } from './replica';

export interface View {
  /** The view root's disk (the head, or the snapshot). */
  root: Disk;
  /** Chain members, newest first (not including the backing image). */
  disks: Disk[];
  chain: Chain;
  size: number;
}

export interface BackingImage {
  path: string;
  /** The file's size (for qcow2 the container's; `layer.size` is the virtual size). */
  size: number;
  format: ImageFormat;
  layer: Layer;
}

/** Opens layer files lazily and keeps them for the life of the replica's views. */
export class LayerSet {
  readonly replica: Replica;
  private readonly files = new Map<string, SparseFileLayer>();
  private backingImage: BackingImage | null | undefined;
  readonly warnings: string[] = [];

  constructor(replica: Replica) {
    this.replica = replica;
  }

  disk(d: Disk): SparseFileLayer {
    let l = this.files.get(d.file);
    if (!l) {
      const fd = openRegularReadOnly(d.path, 'disk file');
      l = new SparseFileLayer(fd, d.path, d.file, fs.fstatSync(fd));
      this.files.set(d.file, l);
    }
    return l;
  }

  backing(): BackingImage | null {
    if (this.backingImage === undefined) {
      const loc = this.replica.backing;
      if (loc instanceof ChainfsError) throw loc;
      if (!loc) {
        this.backingImage = null;
      } else {
        const img = openImage(loc.path);
        for (const w of img.warnings) if (!this.warnings.includes(w)) this.warnings.push(w); // opened again after a check
        this.backingImage = { path: loc.path, size: fs.statSync(loc.path).size, format: img.format, layer: img.layer };
      }
    }
    return this.backingImage;
  }

  /**
   * Why the backing image cannot be opened (not found, an unknown format, a
   * bad qcow2 header), or undefined. Reads its header, then closes it again
   * unless a view already holds it: a node of 500 replicas is listed without
   * keeping 500 images open.
   */
  backingProblem(): string | undefined {
    const held = this.backingImage !== undefined;
    try {
      this.backing();
      return undefined;
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      return e.message;
    } finally {
      if (!held && this.backingImage) {
        this.backingImage.layer.close();
        this.backingImage = undefined;
      }
    }
  }

  /** The view of volume.meta's head (snapshot undefined) or of a snapshot (as `Replica.findSnapshot` takes it). */
  view(snapshot?: string, opts: ChainOptions = {}): View {
    const r = this.replica;
    return this.viewOf(snapshot === undefined ? r.meta.head : r.findSnapshot(snapshot).file, opts);
  }

  /**
   * The view rooted at the disk file `rootFile` (a head or a snapshot): its
   * own chain only, as the engine's OpenSnapshot walks it. Throws the
   * ChainfsError of the first thing on that chain that is broken.
   */
  viewOf(rootFile: string, opts: ChainOptions = {}): View {
    const problem = this.replica.chainProblem(rootFile);
    if (problem) throw new ChainfsError(undefined, problem);
    const disks = this.replica.chain(rootFile);
    const root = disks[0];
    const layers: Layer[] = disks.map((d) => this.disk(d));
    const bi = this.backing();
    if (bi) layers.push(bi.layer);
    const size = root.file === this.replica.meta.head ? this.replica.meta.size : root.stat!.size;
    return { root, disks, size, chain: new Chain(layers, size, opts) };
  }

  close(): void {
    for (const l of this.files.values()) l.close();
    this.files.clear();
    this.backingImage?.layer.close();
    this.backingImage = undefined;
  }
}
