/**
 * The v2 disks written by SPDK's own code (test/fixtures/spdk-v25.05):
 * the parser's view of every lvol equals the manifest (names, ids, parents,
 * sizes, flags, cluster maps, xattrs, md and extent pages), and every lvol
 * reads as SPDK read it (sha256, whole and per MiB). The images are never
 * written.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import { blobIdHex } from '../src/source/spdk/md-page';
import type { SpdkCatalog } from '../src/source/spdk/catalog';
import { FIXTURES, FIXTURE_NAMES, fileSha256, readView, sha256, unpackFixture } from './helpers/spdk-oracle';

interface ManifestLvol {
  name: string; longhorn_role: string; uuid: string; blob_id: string; parent_blob_id: string | null; parent_name: string | null;
  size_bytes: number; num_clusters: number; thin_provisioned: boolean; read_only: boolean; invalid_flags: number; data_ro_flags: number;
  md_ro_flags: number; md_pages: number[]; extent_pages: number[]; allocated_clusters: number; cluster_map: Record<string, number>;
  xattrs: Record<string, { hex: string }>; internal_xattrs: Record<string, { hex: string }>; sha256: string; per_mib_sha256: string[];
  clone_blob_ids: string[];
}

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-fix-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

describe.each(FIXTURE_NAMES)('SPDK-written v2 disk %s', (name) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'manifest.json'), 'utf8'));
  let img: string;
  let before: string;
  let cat: SpdkCatalog;
  beforeAll(() => {
    img = unpackFixture(name, dir);
    before = fileSha256(img);
    cat = openSpdk([img]);
  });
  afterAll(() => {
    cat.close();
    expect(fileSha256(img)).toBe(before);
  });

  it('has the manifest\'s super block and lvstore', () => {
    const d = cat.disks[0];
    const sb = manifest.super_block_as_written;
    expect(d.lvs.bs.sb).toMatchObject({
      version: sb.version, clean: sb.clean, clusterSize: sb.cluster_size, mdStart: sb.md_start, mdLen: sb.md_len,
      size: sb.size, ioUnitSize: sb.io_unit_size, mdPageSize: sb.md_page_size, superBlob: Number(sb.super_blob),
    });
    expect(d.lvs.name).toBe(manifest.lvstore.name);
    expect(d.lvs.uuid).toBe(manifest.lvstore.uuid);
    expect(d.lvs.bs.totalClusters - d.lvs.bs.firstDataCluster).toBe(manifest.lvstore.total_data_clusters);
    expect(d.lvs.bs.freeClusters).toBe(manifest.lvstore.free_clusters);
    expect(d.lvs.bs.enumeration).toBe('blobid-mask');
    expect(cat.warnings).toEqual([]);
  });

  it('parses every lvol as the manifest has it', () => {
    const lvols = [...cat.disks[0].lvs.lvols.values()];
    expect(lvols.map((l) => l.name).sort()).toEqual(manifest.lvols.map((m: ManifestLvol) => m.name).sort());
    for (const m of manifest.lvols as ManifestLvol[]) {
      const l = lvols.find((x) => x.name === m.name)!;
      const map: Record<string, number> = {};
      for (const [i, c] of l.blob.clusters.entries()) map[String(i)] = c;
      const parent = l.parentId === undefined ? undefined : cat.disks[0].lvs.lvols.get(l.parentId);
      expect({
        id: blobIdHex(l.id), uuid: l.uuid, parent: l.parentId === undefined ? null : blobIdHex(l.parentId), parentName: parent?.name ?? null,
        size: l.size, numClusters: l.blob.numClusters, thin: l.blob.thin, readOnly: l.blob.readOnly,
        flags: [l.blob.invalidFlags, l.blob.dataRoFlags, l.blob.mdRoFlags], usesExtentTable: l.blob.usesExtentTable,
        mdPages: l.blob.pages, extentPages: l.blob.extentPages, allocated: l.allocatedClusters, map,
        xattrs: Object.fromEntries([...l.blob.xattrs].map(([k, v]) => [k, v.toString('hex')])),
        internal: Object.fromEntries([...l.blob.internal].map(([k, v]) => [k, v.toString('hex')])),
        clones: l.clones.map(blobIdHex).sort(), role: l.longhorn.role === 'replica-head' ? 'replica-head' : l.longhorn.role,
        problem: l.problem,
      }).toEqual({
        id: m.blob_id, uuid: m.uuid, parent: m.parent_blob_id, parentName: m.parent_name,
        size: m.size_bytes, numClusters: m.num_clusters, thin: m.thin_provisioned, readOnly: m.read_only,
        flags: [m.invalid_flags, m.data_ro_flags, m.md_ro_flags], usesExtentTable: true,
        mdPages: m.md_pages, extentPages: m.extent_pages, allocated: m.allocated_clusters, map: m.cluster_map,
        xattrs: Object.fromEntries(Object.entries(m.xattrs).map(([k, v]) => [k, v.hex])),
        internal: Object.fromEntries(Object.entries(m.internal_xattrs).map(([k, v]) => [k, v.hex])),
        clones: [...m.clone_blob_ids].sort(), role: m.longhorn_role,
        problem: undefined,
      });
    }
  });

  it('reads every lvol as SPDK did (sha256 whole and per MiB), by its lvols/ view and its Longhorn view', async () => {
    for (const m of manifest.lvols as ManifestLvol[]) {
      const v = cat.select({ lvol: m.name });
      const data = await readView(v);
      expect(sha256(data), m.name).toBe(m.sha256);
      expect(Array.from({ length: data.length >> 20 }, (_, i) => sha256(data.subarray(i << 20, (i + 1) << 20)))).toEqual(m.per_mib_sha256);
    }
    const longhorn = cat.views().filter((v) => v.kind !== 'lvol');
    expect(longhorn.length).toBe(manifest.lvols.length + 1); // + volumes/<volume>/volume.img
    for (const v of longhorn) {
      const m = (manifest.lvols as ManifestLvol[]).find((x) => x.name === (v as unknown as { lvol: { name: string } }).lvol.name)!;
      expect(sha256(await readView(v)), v.path).toBe(m.sha256);
    }
  });

  it('a backing image\'s first bytes hash to Longhorn\'s own checksum xattr (SHA-512 of the original file; the lvol is cluster-rounded)', async () => {
    const bi = (manifest.lvols as ManifestLvol[]).find((m) => m.longhorn_role === 'backing-image');
    if (!bi) { expect(name).toBe('01-single-replica-chain'); return; }
    const data = await readView(cat.select({ backingImage: bi.name.replace(/^bi-(.+)-disk-.*$/, '$1') }));
    const want = (bi.xattrs as Record<string, { text?: string }>).longhorn_backing_image_checksum.text;
    const fileSize = 5767168; // ops.log: the backing image's file was written as 5767168 bytes
    expect(createHash('sha512').update(data.subarray(0, fileSize)).digest('hex')).toBe(want);
    expect(data.length).toBe(6 * 1024 * 1024);
    expect(data.subarray(fileSize).every((x) => x === 0)).toBe(true);
  });

  it('names views by Longhorn\'s names and picks the replica', () => {
    const head = (manifest.lvols as ManifestLvol[]).find((m) => m.longhorn_role === 'replica-head')!;
    const vol = head.name.replace(/-r-[0-9a-z]{8}$/, '');
    expect(cat.select({}).path).toBe(`volumes/${vol}/volume.img`);
    expect(cat.select({ volume: vol }).path).toBe(`volumes/${vol}/volume.img`);
    expect(cat.select({ volume: vol, replica: head.name }).path).toBe(`volumes/${vol}/replicas/${head.name}/volume.img`);
    for (const m of (manifest.lvols as ManifestLvol[]).filter((x) => x.longhorn_role === 'snapshot')) {
      const snap = m.name.slice(head.name.length + '-snap-'.length);
      expect(cat.select({ snapshot: snap }).path).toBe(`volumes/${vol}/replicas/${head.name}/snapshots/${snap}.img`);
      expect(cat.select({ replica: head.name, snapshot: m.name }).path).toBe(`volumes/${vol}/replicas/${head.name}/snapshots/${snap}.img`);
    }
    expect(() => cat.select({ volume: 'nope' })).toThrow(/no volume "nope"; volumes: pvc-/);
    expect(() => cat.select({ snapshot: 'nope' })).toThrow(/no snapshot "nope" of replica/);
    expect(() => cat.select({ backup: 'b' })).toThrow(/--backup does not apply to a v2 disk/);
    const text = cat.render();
    expect(text).toContain(`volume ${vol}`);
    expect(text).toContain('[picked]');
    expect(text).toMatch(/clean, 128 MiB, 1\.0 MiB clusters: 127 data, \d+ free; 4 lvols/);
    const json = JSON.parse(cat.files()[0].content().toString());
    expect(json.volumes[0].replicas[0].chain[0]).toBe(head.name);
  });
});
