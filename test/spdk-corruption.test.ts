/**
 * Damaged v2 disks: each failure is one clear line naming the disk, and it
 * stays with what it touches (a bad metadata page fails the lvols that need
 * it; the other views are served).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import { crc32c } from '../src/source/spdk/crc32c';
import { ChainfsError } from '../src/errors';
import { MiB, SpdkDiskBuilder } from './helpers/spdk-builder';
import { REP_A, REP_B, VOL_A, chainScenario, twoVolumesScenario } from './helpers/spdk-scenarios';
import { readView } from './helpers/spdk-oracle';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-c-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

let n = 0;
function disk(scenario: (b: SpdkDiskBuilder) => void, clean = true) {
  const b = new SpdkDiskBuilder();
  scenario(b);
  const file = path.join(dir, `c${n++}.img`);
  const pages = b.build(file, { clean });
  return { b, file, pages };
}

/** Rewrites 4 KiB at `pos` after `edit`; `fixCrc` recomputes its CRC (a well-formed page with bad content). */
function patch(file: string, pos: number, edit: (p: Buffer) => void, fixCrc = false): void {
  const fd = fs.openSync(file, 'r+');
  const p = Buffer.alloc(4096);
  fs.readSync(fd, p, 0, 4096, pos);
  edit(p);
  if (fixCrc) p.writeUInt32LE(crc32c(p, 0, 4092), 4092);
  fs.writeSync(fd, p, 0, 4096, pos);
  fs.closeSync(fd);
}

function openError(file: string): string {
  try {
    openSpdk([file]).close();
  } catch (e) {
    expect(e).toBeInstanceOf(ChainfsError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    expect(m.startsWith(`${file}: `)).toBe(true);
    return m;
  }
  throw new Error('opened');
}

describe('a damaged super block is one line', () => {
  it('bad CRC', () => {
    const { file } = disk(chainScenario);
    patch(file, 0, (p) => { p[30] ^= 1; });
    expect(openError(file)).toMatch(/SPDK super block checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/);
  });
  it('a newer version', () => {
    const { file } = disk(chainScenario);
    patch(file, 0, (p) => { p.writeUInt32LE(4, 8); }, true);
    expect(openError(file)).toMatch(/version 4 is newer than this reader knows/);
  });
  it('not an lvstore', () => {
    const { file } = disk(chainScenario);
    patch(file, 0, (p) => { p.fill(0, 56, 72); p.write('BLOBFS', 56); }, true);
    expect(openError(file)).toMatch(/blobstore of type "BLOBFS", not an lvstore/);
  });
  it('a metadata region past the blobstore', () => {
    const { file } = disk(chainScenario);
    patch(file, 0, (p) => { p.writeUInt32LE(1 << 30, 52); }, true);
    expect(openError(file)).toMatch(/metadata region \(pages 4\+1073741824\) lies outside the blobstore/);
  });
  it('an older super block (version 2: no size, io_unit_size, md_page_size) reads with their defaults', async () => {
    const { b, file } = disk(chainScenario);
    patch(file, 0, (p) => { p.writeUInt32LE(2, 8); p.fill(0, 80, 96); }, true);
    const cat = openSpdk([file]);
    expect(cat.disks[0].lvs.bs.sb).toMatchObject({ version: 2, size: 64 * MiB, ioUnitSize: 4096, mdPageSize: 4096 });
    expect((await readView(cat.select({}))).equals(b.read(b.byName(REP_A).id))).toBe(true);
    cat.close();
  });
  it('an image cut inside the super block', () => {
    const { file } = disk(chainScenario);
    fs.truncateSync(file, 2000);
    expect(openError(file)).toMatch(/too short for an SPDK blobstore/);
  });
});

describe('damage below the super block stays local', () => {
  const s2 = `${REP_A}-snap-s2`;
  const dirA = `volumes/${VOL_A}/replicas/${REP_A}`;

  it.each([true, false])('a metadata page with a bad CRC (clean=%s)', async (clean) => {
    const { b, file, pages } = disk(chainScenario, clean);
    const id = b.byName(s2).id;
    patch(file, b.pageOffset(pages.get(id)![0]), (p) => { p[4000] ^= 0xff; }); // past its descriptors: only the CRC tells
    const cat = openSpdk([file]);
    const s2View = cat.view(`lvols/${s2}.img`);
    if (clean) expect(s2View?.problem).toBe(`lvol ${s2}: metadata page ${pages.get(id)![0]} checksum mismatch`);
    else expect(s2View).toBeUndefined(); // a scan does not see an invalid first page: the blob is gone, as for SPDK's recovery
    expect(cat.view(`${dirA}/volume.img`)!.problem).toMatch(clean ? /parent .*-snap-s2 \(0x[0-9a-f]+\) is unreadable: metadata page \d+ checksum mismatch/ : /parent blob 0x[0-9a-f]+ \(SNAP of .*-snap-s3\) does not exist/);
    await expect(cat.view(`${dirA}/volume.img`)!.open({})).rejects.toThrow(ChainfsError);
    const s1 = cat.view(`${dirA}/snapshots/s1.img`)!;
    expect(s1.problem).toBeUndefined();
    expect((await readView(s1)).equals(b.read(b.byName(`${REP_A}-snap-s1`).id))).toBe(true);
    expect(cat.render()).toMatch(/PROBLEM: parent/);
    cat.close();
  });

  it('an extent page with a bad CRC, an unknown descriptor type, unknown flags: the lvol alone', async () => {
    const { b, file, pages } = disk(twoVolumesScenario);
    const a = b.byName(REP_A);
    const bHead = b.byName(REP_B);
    const s1 = b.byName(`${REP_A}-snap-a1`);
    patch(file, b.pageOffset(a.extentPages[0]), (p) => { p[40] ^= 1; });
    patch(file, b.pageOffset(pages.get(bHead.id)![0]), (p) => { p[16] = 9; }, true); // first descriptor (FLAGS) becomes type 9
    patch(file, b.pageOffset(pages.get(s1.id)![0]), (p) => { p[16 + 5] |= 0x10; }, true); // invalid_flags bit 4
    const cat = openSpdk([file]);
    expect(cat.view(`lvols/${REP_A}.img`)!.problem).toBe(`lvol ${REP_A}: extent page ${a.extentPages[0]}: checksum mismatch`);
    expect(cat.view(`lvols/${REP_B}.img`)!.problem).toMatch(/unknown descriptor type 9 \(a newer SPDK format\?\); refusing to guess/);
    expect(cat.view(`lvols/${s1.name}.img`)!.problem).toMatch(/unknown invalid_flags 0x15 \(a newer SPDK feature/);
    const bi = cat.view('backing-images/base.img')!;
    expect((await readView(bi)).equals(b.read(b.byName(`bi-base-disk-${b.lvsUuid}`).id))).toBe(true);
    const b1 = cat.view(`lvols/${REP_B}-snap-b1.img`)!;
    expect((await readView(b1)).equals(b.read(b.byName(`${REP_B}-snap-b1`).id))).toBe(true);
    cat.close();
  });

  it('a cycle in SNAP fails the lvols on it; the other volume is served', async () => {
    const { b, file } = disk((x) => {
      twoVolumesScenario(x);
      const s = x.byName(`${REP_A}-snap-a1`);
      const h = x.byName(REP_A);
      x.setParent(s.id, h.id);
    });
    const cat = openSpdk([file]);
    expect(cat.view(`lvols/${REP_A}.img`)!.problem).toMatch(/its chain of parents \(SNAP\) loops at/);
    expect(cat.view(`lvols/${REP_A}-snap-a1.img`)!.problem).toMatch(/loops at/);
    const hb = cat.select({ volume: 'pvc-bbbbbbbb-0000-4000-8000-000000000002' });
    expect((await readView(hb)).equals(b.read(b.byName(REP_B).id))).toBe(true);
    expect(() => cat.select({ volume: VOL_A })).toThrow(/volume .* has no replica with a readable head: .*loops at/);
    cat.close();
  });

  it('a truncated image: lvols with clusters past its end fail, the rest is served', async () => {
    const { b, file } = disk(twoVolumesScenario);
    const top = Math.max(...[...b.blobs.values()].flatMap((x) => x.clusters));
    const owner = [...b.blobs.values()].find((x) => x.clusters.includes(top))!;
    fs.truncateSync(file, top * MiB + 12345);
    const cat = openSpdk([file]);
    expect(cat.warnings.join('\n')).toMatch(/is shorter than its blobstore .*: a truncated copy\?/);
    expect(cat.view(`lvols/${owner.name}.img`)!.problem).toMatch(new RegExp(`maps to device cluster ${top} at byte ${top * MiB}, past the end of the image`));
    let served = 0;
    for (const m of b.blobs.values()) {
      if (m.clusters.some((c) => c >= top) || m === owner) continue;
      const v = cat.view(`lvols/${m.name}.img`)!;
      if (v.problem) continue; // a child of the owner
      expect((await readView(v)).equals(b.read(m.id)), m.name).toBe(true);
      served++;
    }
    expect(served).toBeGreaterThan(2);
    cat.close();
  });

  it('an image cut inside the metadata: blobs whose pages are gone fail', () => {
    const { file, b, pages } = disk(chainScenario);
    const s3 = b.byName(`${REP_A}-snap-s3`);
    const cut = b.pageOffset(pages.get(s3.id)![0]);
    fs.truncateSync(file, cut);
    const cat = openSpdk([file]);
    expect(cat.view(`lvols/blob-0x${s3.id.toString(16)}.img`)!.problem).toMatch(/metadata page \d+ lies past the end of the image \(truncated\?\)/);
    expect(cat.view(`lvols/${REP_A}-snap-s1.img`)!.problem).toMatch(/past the end of the image \(0 whole clusters\): truncated\?/);
    cat.close();
  });
});
