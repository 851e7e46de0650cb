/**
 * v2 disks from the test blobstore writer: clean and crashed lvstores, extent
 * tables and RLE, Longhorn's histories (chains, a deleted middle snapshot,
 * a revert, an expansion, two volumes interleaved, torn snapshots). Oracle:
 * the writer's own model of each lvol. The writer itself is cross-checked
 * against SPDK: replaying a fixture's ops.log gives the fixture's metadata.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import { blobIdHex } from '../src/source/spdk/md-page';
import type { SpdkCatalog } from '../src/source/spdk/catalog';
import { MiB, SpdkDiskBuilder, u64 } from './helpers/spdk-builder';
import {
  REP_A, VOL_A, VOL_B, chainScenario, deletedMiddleScenario, expansionScenario, revertScenario, tornScenario, twoVolumesScenario,
} from './helpers/spdk-scenarios';
import { FIXTURES, FIXTURE_NAMES, readView } from './helpers/spdk-oracle';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-b-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

let n = 0;
function build(b: SpdkDiskBuilder, clean = true): string {
  const file = path.join(dir, `d${n++}.img`);
  b.build(file, { clean });
  return file;
}

/** Every lvol the writer made reads as its model says, through the lvols/ views; nothing else is there. */
async function expectModel(cat: SpdkCatalog, b: SpdkDiskBuilder): Promise<void> {
  const lvols = cat.disks[0].lvs.lvols;
  expect([...lvols.values()].map((l) => l.name).sort()).toEqual([...b.blobs.values()].map((x) => x.name).sort());
  for (const m of b.blobs.values()) {
    const l = lvols.get(m.id)!;
    expect(l.name).toBe(m.name);
    expect(l.parentId).toBe(m.parent);
    expect(l.blob.clusters.toArray()).toEqual(m.clusters);
    const v = cat.view(`lvols/${m.name}.img`)!;
    expect(v.problem).toBeUndefined();
    expect((await readView(v)).equals(b.read(m.id)), m.name).toBe(true);
  }
}

describe('the test writer against SPDK', () => {
  it.each(FIXTURE_NAMES)('replaying %s/ops.log gives the metadata SPDK wrote', (name) => {
    const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'manifest.json'), 'utf8'));
    const ops = fs.readFileSync(path.join(FIXTURES, name, 'ops.log'), 'utf8').trim().split('\n');
    const init = /name=(\S+) uuid=(\S+)/.exec(ops[0])!;
    const b = new SpdkDiskBuilder({ clusters: manifest.image.size_bytes / MiB, lvsName: init[1], lvsUuid: init[2] });
    const id = (nm: string) => b.byName(nm).id;
    for (const line of ops.slice(1)) {
      const w = line.split(' ');
      const kv = Object.fromEntries(w.filter((x) => x.includes('=')).map((x) => x.split('=')));
      if (w[0] === 'create') b.create(w[1], Number(kv.size));
      else if (w[0] === 'write' || w[0] === 'write_zeroes') b.write(id(w[1]), Number(kv.off), Buffer.alloc(Number(kv.len), w[0] === 'write' ? 1 : 0));
      else if (w[0] === 'snapshot') b.snapshot(id(w[1]), w[3]);
      else if (w[0] === 'clone') b.clone(id(w[1]), w[3]);
      else if (w[0] === 'resize') b.resize(id(w[1]), Number(w[3]));
      else if (w[0] === 'delete') b.delete(id(w[1]));
      else if (w[0] !== 'lvs_unload') throw new Error(`unknown op ${line}`);
      if (kv.blobid) expect(blobIdHex(id(w[0] === 'create' ? w[1] : w[3]))).toBe(kv.blobid);
    }
    const cat = openSpdk([build(b)]);
    try {
      const got = [...cat.disks[0].lvs.lvols.values()].map((l) => {
        const map: Record<string, number> = {};
        for (const [i, c] of l.blob.clusters.entries()) map[String(i)] = c;
        return { name: l.name, id: blobIdHex(l.id), parent: l.parentId === undefined ? null : blobIdHex(l.parentId), size: l.size, map, md: l.blob.pages, ep: l.blob.extentPages };
      }).sort((x, y) => x.name.localeCompare(y.name));
      const want = manifest.lvols.map((m: Record<string, unknown>) => ({
        name: m.name, id: m.blob_id, parent: m.parent_blob_id, size: m.size_bytes, map: m.cluster_map, md: m.md_pages, ep: m.extent_pages,
      })).sort((x: { name: string }, y: { name: string }) => x.name.localeCompare(y.name));
      expect(got).toEqual(want);
      expect(cat.disks[0].lvs.bs.freeClusters).toBe(manifest.lvstore.free_clusters);
    } finally {
      cat.close();
    }
  });
});

describe.each([
  { clean: true, extentTable: true },
  { clean: false, extentTable: true },
  { clean: true, extentTable: false },
])('v2 disk written clean=$clean extentTable=$extentTable', ({ clean, extentTable }) => {
  const open = (scenario: (b: SpdkDiskBuilder) => void) => {
    const b = new SpdkDiskBuilder({ extentTable });
    scenario(b);
    const cat = openSpdk([build(b, clean)]);
    expect(cat.disks[0].lvs.bs.enumeration).toBe(clean ? 'blobid-mask' : 'metadata-scan');
    expect(cat.warnings).toEqual([]);
    return { b, cat };
  };
  const dirA = `volumes/${VOL_A}/replicas/${REP_A}`;

  it('a chain of three snapshots', async () => {
    const { b, cat } = open(chainScenario);
    await expectModel(cat, b);
    expect(cat.views().filter((v) => v.kind !== 'lvol').map((v) => v.path).sort()).toEqual(
      [`${dirA}/snapshots/s1.img`, `${dirA}/snapshots/s2.img`, `${dirA}/snapshots/s3.img`, `${dirA}/volume.img`, `volumes/${VOL_A}/volume.img`]);
    expect((await readView(cat.select({}))).equals(b.read(b.byName(REP_A).id))).toBe(true);
    expect((await readView(cat.select({ snapshot: 's2' }))).equals(b.read(b.byName(`${REP_A}-snap-s2`).id))).toBe(true);
    expect(cat.render()).toContain('chain: head -> snap:s3 -> snap:s2 -> snap:s1');
    cat.close();
  });

  it('a deleted middle snapshot: its child relinked to its parent', async () => {
    const { b, cat } = open(deletedMiddleScenario);
    await expectModel(cat, b);
    expect(cat.render()).toContain('chain: head -> snap:s3 -> snap:s1');
    cat.close();
  });

  it('a revert: the head recreated as a clone of an older snapshot', async () => {
    const { b, cat } = open(revertScenario);
    await expectModel(cat, b);
    expect(cat.render()).toContain('chain: head -> snap:s1\n');
    expect(cat.view(`${dirA}/snapshots/s3.img`)).toBeDefined();
    cat.close();
  });

  it('a snapshot of a shrunk head hides its larger parent: zeros past its end, not the grandparent\'s data', async () => {
    const { b, cat } = open((x) => {
      const h = x.create(REP_A, 8 * MiB);
      x.write(h, 6 * MiB, Buffer.alloc(4096, 0xee));
      x.snapshot(h, `${REP_A}-snap-big`);
      x.resize(h, 4 * MiB);
      x.snapshot(h, `${REP_A}-snap-small`);
      x.resize(h, 8 * MiB);
    });
    await expectModel(cat, b);
    const head = await readView(cat.select({}));
    expect(head.subarray(6 * MiB, 6 * MiB + 4096).every((x) => x === 0)).toBe(true);
    cat.close();
  });

  it('an expansion: zeros past the snapshot\'s end', async () => {
    const { b, cat } = open(expansionScenario);
    await expectModel(cat, b);
    const head = await readView(cat.select({}));
    expect(head.length).toBe(10 * MiB);
    expect(head.subarray(4 * MiB, 7 * MiB).every((x) => x === 0)).toBe(true);
    cat.close();
  });

  it('two volumes interleaved, one on a backing image', async () => {
    const { b, cat } = open(twoVolumesScenario);
    await expectModel(cat, b);
    expect(() => cat.select({})).toThrow(/several volumes/);
    expect(cat.select({ volume: VOL_B }).path).toBe(`volumes/${VOL_B}/volume.img`);
    expect(() => cat.select({ volume: VOL_B, backingImage: 'base' })).toThrow(/--backing-image selects a backing image on its own/);
    expect((await readView(cat.select({ backingImage: 'base' }))).equals(b.read(b.byName(`bi-base-disk-${b.lvsUuid}`).id))).toBe(true);
    expect(cat.view('backing-images/base.img')).toBeDefined();
    expect(cat.render()).toContain('chain: head -> snap:b1 -> bi:base');
    cat.close();
  });

  it('torn snapshots: one SPDK keeps, one it would delete; a transient lvol', async () => {
    const { b, cat } = open(tornScenario);
    await expectModel(cat, b);
    const lv = (nm: string) => [...cat.disks[0].lvs.lvols.values()].find((l) => l.name === nm)!;
    expect(lv(`${REP_A}-snap-torn-late`).torn?.outcome).toBe('kept');
    expect(lv(`${REP_A}-snap-torn-early`).torn?.outcome).toBe('dropped');
    expect(cat.view(`${dirA}/snapshots/torn-early.img`)).toBeUndefined();
    expect(cat.view(`${dirA}/snapshots/torn-late.img`)).toBeDefined();
    const opened = await cat.view(`lvols/${REP_A}-snap-torn-early.img`)!.open({});
    expect(opened.warnings.join()).toMatch(/torn by a crash \(SNAPTMP\) that SPDK's load would delete/);
    expect((await cat.view(`${dirA}/snapshots/torn-late.img`)!.open({})).warnings.join()).toMatch(/SPDK's load keeps it/);
    const text = cat.render();
    expect(text).toMatch(/torn-early .*TORN snapshot \(SNAPTMP\) that SPDK's load would delete/);
    expect(text).toContain(`transient ${REP_A}-rebuilding (rebuilding)`);
    cat.close();
  });
});

describe('v2 disk metadata shapes', () => {
  it('a metadata chain of several pages and an extent table with unallocated ranges', async () => {
    const b = new SpdkDiskBuilder({ clusters: 560 });
    const h = b.create(REP_A, 1030 * MiB);
    for (let i = 0; i < 3; i++) b.blob(h).xattrs.set(`big${i}`, Buffer.alloc(1500, 0x41 + i));
    b.write(h, 520 * MiB + 5, Buffer.from('hello'));
    const cat = openSpdk([build(b, false)]);
    const l = cat.disks[0].lvs.lvols.get(h)!;
    expect(l.blob.pages.length).toBe(2);
    expect(l.blob.extentPages.length).toBe(1);
    expect(l.blob.numClusters).toBe(1030);
    expect(l.xattrs.big2).toBe('C'.repeat(1500));
    expect(l.blob.clusters.toArray()).toEqual(b.blob(h).clusters);
    const o = await cat.select({}).open({});
    const buf = Buffer.alloc(2 * MiB);
    o.chain.read(buf, 0, 2 * MiB, 519 * MiB);
    const want = Buffer.alloc(2 * MiB);
    want.write('hello', MiB + 5);
    expect(buf.equals(want)).toBe(true);
    cat.close();
  });

  it('several disks: a volume\'s replicas compared, the one with most head clusters picked', async () => {
    const disks = [3, 5, 5].map((writes, i) => {
      const b = new SpdkDiskBuilder({ lvsName: `disk-${i}` });
      const h = b.create(`${VOL_A}-r-0000000${i}`, 8 * MiB);
      for (let k = 0; k < writes; k++) b.write(h, k * MiB, Buffer.alloc(10, k + 1));
      return build(b);
    });
    const cat = openSpdk(disks);
    expect(cat.select({ volume: VOL_A }).path).toBe(`volumes/${VOL_A}/volume.img`);
    expect((cat.select({ volume: VOL_A }) as unknown as { lvol: { name: string } }).lvol.name).toBe(`${VOL_A}-r-00000001`);
    expect((cat.report() as { volumes: { equivalent: string[] }[] }).volumes[0].equivalent).toEqual([`volumes/${VOL_A}/replicas/${VOL_A}-r-00000002`]);
    expect(cat.render()).toMatch(/r-00000002 on disk-2 \[equivalent\]/);
    cat.close();
    const twice = openSpdk([disks[0], disks[0]]);
    expect(twice.disks.length).toBe(1);
    expect(twice.warnings).toEqual([`${disks[0]}: given twice; read once`]);
    expect(() => twice.select({ volume: VOL_A, replica: 'nope' })).toThrow(/no replica "nope" of volume .*; replicas: .*-r-00000000$/);
    twice.close();
  });

  it('an encrypted volume (a LUKS header at byte 0) is served as ciphertext and said so; a changed image is noticed', async () => {
    const b = new SpdkDiskBuilder();
    const h = b.create(REP_A, 4 * MiB);
    b.write(h, 0, Buffer.concat([Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 2]), Buffer.alloc(100, 7)]));
    b.snapshot(h, `${REP_A}-snap-x`);
    const file = build(b);
    const cat = openSpdk([file]);
    expect(cat.render()).toContain('ENCRYPTED (LUKS header: served as ciphertext)');
    const o = await cat.select({}).open({});
    expect(o.warnings.join()).toMatch(/is encrypted \(its head starts with a LUKS header\): this view is ciphertext/);
    expect((await readView(cat.select({}))).equals(b.read(h))).toBe(true);
    const layer = o.chain.layers[0];
    expect(layer.changed!()).toBeUndefined();
    fs.appendFileSync(file, Buffer.alloc(512));
    expect(layer.changed!()).toBe(`size changed from ${64 * MiB} to ${64 * MiB + 512}`);
    cat.close();
  });

  it.each([true, false])('16 KiB metadata pages (md_page_size, SPDK v25.01+), clean=%s', async (clean) => {
    const b = new SpdkDiskBuilder({ mdPageSize: 16384 });
    chainScenario(b);
    const cat = openSpdk([build(b, clean)]);
    expect(cat.disks[0].lvs.bs.sb.mdPageSize).toBe(16384);
    expect(cat.disks[0].lvs.bs.enumeration).toBe(clean ? 'blobid-mask' : 'metadata-scan');
    await expectModel(cat, b);
    cat.close();
  });

  it('a 1 TiB thin lvol on a 64 MiB disk: written near its end, read back; its map holds one extent page', async () => {
    const b = new SpdkDiskBuilder();
    const h = b.create(REP_A, 1024 * 1024 * MiB);
    b.write(h, 1024 * 1024 * MiB - MiB + 5, Buffer.from('end'));
    const cat = openSpdk([build(b, false)]);
    const l = cat.disks[0].lvs.lvols.get(h)!;
    expect(l.size).toBe(2 ** 40);
    expect([...l.blob.clusters.entries()]).toEqual([[1024 * 1024 - 1, b.blob(h).clusters[1024 * 1024 - 1]]]);
    const o = await cat.select({}).open({});
    const buf = Buffer.alloc(2 * MiB, 1);
    o.chain.read(buf, 0, buf.length, 2 ** 40 - 2 * MiB);
    const want = Buffer.alloc(2 * MiB);
    want.write('end', MiB + 5);
    expect(buf.equals(want)).toBe(true);
    expect(o.chain.runs(2 ** 40 - 8 * MiB, 8 * MiB).map((r) => [r.offset, r.length, r.layer === null])).toEqual([[2 ** 40 - 8 * MiB, 7 * MiB, true], [2 ** 40 - MiB, MiB, false]]);
    cat.close();
  });

  it('a snapshot delete cut by a crash (SNAPRM): kept while its clone still points to it, dropped once relinked', async () => {
    const b = new SpdkDiskBuilder();
    chainScenario(b);
    const s2 = b.byName(`${REP_A}-snap-s2`);
    const s3 = b.byName(`${REP_A}-snap-s3`);
    b.setInternal(s2.id, 'SNAPRM', u64(s3.id));
    const before = openSpdk([build(b, false)]);
    const lv = (c: SpdkCatalog, nm: string) => [...c.disks[0].lvs.lvols.values()].find((l) => l.name === nm)!;
    expect(lv(before, s2.name).torn).toEqual({ xattr: 'SNAPRM', cloneId: s3.id, outcome: 'kept' });
    expect(before.view(`volumes/${VOL_A}/replicas/${REP_A}/snapshots/s2.img`)).toBeDefined();
    before.close();
    b.setParent(s3.id, b.byName(`${REP_A}-snap-s1`).id); // the clone relinked, s2 not yet gone
    const after = openSpdk([build(b, false)]);
    expect(lv(after, s2.name).torn?.outcome).toBe('dropped');
    expect(after.view(`volumes/${VOL_A}/replicas/${REP_A}/snapshots/s2.img`)).toBeUndefined();
    expect(after.render()).toContain(`${s2.name} on disk-1: 16.0 MiB, 3.0 MiB allocated, TORN snapshot (SNAPRM) that SPDK's load would delete`);
    after.close();
  });

  it('a replica whose head is gone (only snapshots left) is listed; --snapshot reads them, the head is refused in one line', async () => {
    const b = new SpdkDiskBuilder();
    chainScenario(b);
    b.delete(b.byName(REP_A).id);
    const cat = openSpdk([build(b)]);
    expect(() => cat.select({ replica: REP_A })).toThrow(new RegExp(`replica ${REP_A} has no head lvol on .*; pick one with --snapshot`));
    expect(() => cat.select({ volume: VOL_A })).toThrow(/has no replica with a readable head: .*: no head/);
    const s3 = cat.select({ replica: REP_A, snapshot: 's3' });
    expect((await readView(s3)).equals(b.read(b.byName(`${REP_A}-snap-s3`).id))).toBe(true);
    expect(cat.render()).toContain(`replica ${REP_A} on disk-1: no head lvol`);
    cat.close();
  });
});
