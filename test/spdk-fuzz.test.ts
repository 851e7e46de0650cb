/**
 * Random damage to a v2 disk's metadata (bytes flipped in the super block,
 * md pages, extent pages and masks, with and without a recomputed CRC so
 * that the descriptor parser sees well-formed pages with wild numbers):
 * opening, inspecting and reading either work or fail with a one-line
 * ChainfsError; nothing else is ever thrown (a TypeError, a RangeError or
 * an allocation from an unchecked number would be a bug).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import { crc32c } from '../src/source/spdk/crc32c';
import { ChainfsError } from '../src/errors';
import { SpdkDiskBuilder } from './helpers/spdk-builder';
import { twoVolumesScenario } from './helpers/spdk-scenarios';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-f-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
}

describe.each([true, false])('random metadata damage (clean=%s)', (clean) => {
  it('never throws anything but a one-line ChainfsError', async () => {
    const b = new SpdkDiskBuilder();
    twoVolumesScenario(b);
    const file = path.join(dir, `f-${clean}.img`);
    const layout = b.build(file, { clean });
    const pages = [0, ...[1, 2, 3].map((p) => p * 4096), ...[...layout.values()].flat().map((p) => b.pageOffset(p)),
      ...[...b.blobs.values()].flatMap((x) => x.extentPages.filter(Boolean).map((p) => b.pageOffset(p)))];
    const fd = fs.openSync(file, 'r+');
    const rand = rng(Number(process.env.SPDK_FUZZ_SEED ?? 0) + (clean ? 7 : 11));
    let opened = 0;
    let refused = 0;
    try {
      for (let i = 0; i < Number(process.env.SPDK_FUZZ_N ?? 150); i++) {
        const at = pages[Math.floor(rand() * pages.length)];
        const orig = Buffer.alloc(4096);
        fs.readSync(fd, orig, 0, 4096, at);
        const p = Buffer.from(orig);
        const flips = 1 + Math.floor(rand() * 6);
        for (let k = 0; k < flips; k++) {
          const off = Math.floor(rand() * 4092);
          p[off] = rand() < 0.5 ? p[off] ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
        }
        if (rand() < 0.7) p.writeUInt32LE(crc32c(p, 0, 4092), 4092);
        fs.writeSync(fd, p, 0, 4096, at);
        try {
          const cat = openSpdk([file]);
          opened++;
          cat.render();
          JSON.stringify(cat.report());
          for (const v of cat.views()) {
            if (v.problem) continue;
            try {
              const o = await v.open({});
              const buf = Buffer.alloc(64 * 1024);
              for (const pos of [0, v.size / 2, v.size - buf.length].map((x) => Math.max(0, Math.floor(x / 4096) * 4096))) {
                o.chain.read(buf, 0, Math.min(buf.length, v.size - pos), pos);
              }
            } catch (e) {
              if (!(e instanceof ChainfsError)) throw e;
              expect(e.message).not.toContain('\n');
            }
          }
          cat.close();
        } catch (e) {
          if (!(e instanceof ChainfsError)) throw new Error(`case ${i} (page at ${at}): ${(e as Error).stack}`);
          expect(e.message).not.toContain('\n');
          refused++;
        } finally {
          fs.writeSync(fd, orig, 0, 4096, at);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    expect(opened).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(0);
  });
});
