/**
 * Before an overlay is written over BASE (`export --since A --backing BASE`):
 * is BASE really view A? Its virtual size must be A's, and sampled 4 KiB
 * blocks (spread over the whole image and over A's data) must hold A's
 * bytes. Sampling costs 128 small reads, not a full comparison: it catches
 * the wrong file, the wrong snapshot or a base written from another volume,
 * not a single flipped block.
 */
import * as path from 'node:path';
import type { Chain } from '../chain/chain';
import { ChainfsError } from '../errors';
import { openImage } from '../layer/open-image';
import type { QcowBacking } from './qcow2-writer';

const SAMPLES = 64;
const BLOCK = 4096;

/**
 * Checks BASE against view `a`; returns what the overlay's header records:
 * BASE's path relative to OUT's directory when it was given relative (qemu
 * resolves it from there), as given when absolute, and its format.
 * Throws ChainfsError naming BASE and what does not match.
 */
export async function checkBase(base: string, out: string, a: Chain, viewName: string): Promise<QcowBacking> {
  const img = openImage(path.resolve(base));
  try {
    if (img.layer.size !== a.size) {
      throw new ChainfsError(base, `is ${img.layer.size} bytes (virtual), but ${viewName} is ${a.size}: not an export of ${viewName}`);
    }
    const blocks = Math.floor(a.size / BLOCK);
    const offsets = new Set<number>();
    for (let k = 0; k < SAMPLES && blocks > 0; k++) offsets.add(Math.floor((k * blocks) / SAMPLES) * BLOCK);
    for (const r of a.runs(0, a.size)) {
      if (offsets.size >= 2 * SAMPLES) break;
      if (r.layer && r.length >= BLOCK) offsets.add(r.offset - (r.offset % BLOCK));
    }
    const mine = Buffer.alloc(BLOCK);
    const theirs = Buffer.alloc(BLOCK);
    for (const off of [...offsets].sort((x, y) => x - y)) {
      const n = Math.min(BLOCK, a.size - off);
      await a.readAsync(mine, 0, n, off);
      img.layer.read(theirs, 0, n, off);
      if (mine.compare(theirs, 0, n, 0, n) !== 0) {
        throw new ChainfsError(base, `differs from ${viewName} at offset ${off}: not an export of ${viewName} (or changed since)`);
      }
    }
    const file = path.isAbsolute(base) ? base : path.relative(path.dirname(path.resolve(out)), path.resolve(base));
    return { file, format: img.format === 'qcow2' ? 'qcow2' : 'raw' };
  } finally {
    img.layer.close();
  }
}
