/**
 * v2 disks through the real CLI, as an operator uses them: inspect (text
 * and JSON) of two disks, cat / export (raw, and qcow2 re-read by qemu-img)
 * of every lvol by --lvol and by Longhorn's names, a real mount of both
 * disks whose every view equals its manifest sha256, a damaged disk in one
 * line, and the images never written.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfs, chainfsOk } from './helpers/cli';
import { isMounted } from './helpers/mount';
import { qemuImg } from './helpers/qemu';
import { FIXTURES, FIXTURE_NAMES, fileSha256, sha256, unpackFixture } from './helpers/spdk-oracle';
import { MiB, SpdkDiskBuilder } from './helpers/spdk-builder';

interface ManifestLvol { name: string; longhorn_role: string; sha256: string }
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-spdk-cli-'));
const mp = path.join(tmp, 'mnt');
const manifests = FIXTURE_NAMES.map((n) => JSON.parse(fs.readFileSync(path.join(FIXTURES, n, 'manifest.json'), 'utf8')));
const lvols: (ManifestLvol & { disk: number })[] = manifests.flatMap((m, disk) => m.lvols.map((l: ManifestLvol) => ({ ...l, disk })));
let imgs: string[];
let before: string[];

beforeAll(() => {
  imgs = FIXTURE_NAMES.map((n) => unpackFixture(n, tmp));
  before = imgs.map(fileSha256);
});

afterAll(() => {
  if (isMounted(mp)) { chainfs(['umount', mp]); spawnSync('fusermount', ['-uz', mp]); }
  expect(imgs.map(fileSha256)).toEqual(before); // never written
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('inspect DISK...', () => {
  it('text: lvstores, volumes, replicas, chains, snapshots, backing image', () => {
    const out = String(chainfsOk(['inspect', ...imgs]));
    expect(out).toContain(`v2 disk ${imgs[0]}: lvstore disk-nvme1 (0ef85146-179d-4fb3-a62c-c9bca16fb413)`);
    expect(out).toContain('clean, 128 MiB, 1.0 MiB clusters: 127 data, 104 free; 4 lvols');
    expect(out).toContain('chain: head -> snap:daily-1 -> snap:4c1d7e2a-9b3f-4a8e-b6d5-0f2e1c3a7b9d -> bi:ubuntu-base');
    expect(out).toMatch(/snapshot before-upgrade: 32\.0 MiB, 6\.0 MiB allocated \(user, 2026-08-20T10:30:00Z\)/);
    expect(out).toMatch(/ubuntu-base \(bi-ubuntu-base-disk-eea4d778-a51b-4be3-b81c-69f11ccb9b10\): 6\.0 MiB, 6\.0 MiB allocated, ready/);
  });

  it('--json: the report, with every lvol of both disks', () => {
    const j = JSON.parse(String(chainfsOk(['inspect', ...imgs, '--json'])));
    expect(j.kind).toBe('spdk');
    expect(j.disks.map((d: { lvstore: { name: string } }) => d.lvstore.name)).toEqual(['disk-nvme1', 'disk-bi']);
    expect(j.disks.flatMap((d: { lvols: { name: string }[] }) => d.lvols.map((l) => l.name)).sort()).toEqual(lvols.map((l) => l.name).sort());
    expect(j.volumes.map((v: { picked: string }) => v.picked)).toEqual(manifests.map((m) => {
      const head = m.lvols.find((l: ManifestLvol) => l.longhorn_role === 'replica-head').name as string;
      return `volumes/${head.replace(/-r-[0-9a-z]{8}$/, '')}/replicas/${head}`;
    }));
  });
});

describe('cat and export', () => {
  it('cat --lvol NAME: every lvol equals its manifest sha256', () => {
    for (const l of lvols) expect(sha256(chainfsOk(['cat', imgs[l.disk], '--lvol', l.name])), l.name).toBe(l.sha256);
  });

  it('cat --volume / --snapshot / --backing-image on both disks at once', () => {
    const head = lvols.find((l) => l.disk === 1 && l.longhorn_role === 'replica-head')!;
    const vol = head.name.replace(/-r-[0-9a-z]{8}$/, '');
    expect(sha256(chainfsOk(['cat', ...imgs, '--volume', vol]))).toBe(head.sha256);
    expect(sha256(chainfsOk(['cat', ...imgs, '--volume', vol, '--snapshot', 'daily-1']))).toBe(lvols.find((l) => l.name.endsWith('-snap-daily-1'))!.sha256);
    expect(sha256(chainfsOk(['cat', ...imgs, '--backing-image', 'ubuntu-base']))).toBe(lvols.find((l) => l.longhorn_role === 'backing-image')!.sha256);
    const r = chainfs(['cat', ...imgs]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^chainfs: .*several volumes on these disks; pick one with --volume \(volumes: pvc-3f6d2a8e-91b4-4c1e-a7d2-5b0e8c4f1a93, pvc-b71c09e4-2d3a-4f5b-8c6d-7e8f90a1b2c3\)/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('export raw and qcow2 (re-read by qemu-img) equal the manifest', () => {
    for (const l of lvols.filter((x) => x.longhorn_role !== 'snapshot' || x.name.endsWith('before-upgrade'))) {
      const raw = path.join(tmp, 'out.raw');
      const q = path.join(tmp, 'out.qcow2');
      chainfsOk(['export', imgs[l.disk], '--lvol', l.name, raw, '--overwrite', '--quiet']);
      expect(fileSha256(raw), l.name).toBe(l.sha256);
      chainfsOk(['export', imgs[l.disk], '--lvol', l.name, q, '--format', 'qcow2', '--overwrite', '--quiet']);
      qemuImg(['check', '-q', '-f', 'qcow2', q]);
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', q, raw]);
      expect(fileSha256(raw), `${l.name} qcow2`).toBe(l.sha256);
    }
  });

  it('a damaged disk fails in one line naming it', () => {
    const bad = path.join(tmp, 'bad.img');
    fs.copyFileSync(imgs[0], bad);
    const fd = fs.openSync(bad, 'r+');
    fs.writeSync(fd, Buffer.from([0xff]), 0, 1, 30);
    fs.closeSync(fd);
    const r = chainfs(['inspect', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^chainfs: ${bad}: SPDK super block checksum mismatch .*: corrupt super block\\n$`));
  });
});

describe('mount DISK... MP', () => {
  it('serves every view of both disks; each equals its manifest sha256; qemu-img reads a replica view', () => {
    fs.mkdirSync(mp);
    chainfsOk(['mount', ...imgs, mp]);
    try {
      for (const l of lvols) expect(sha256(fs.readFileSync(path.join(mp, 'lvols', `${l.name}.img`))), l.name).toBe(l.sha256);
      const catalog = JSON.parse(fs.readFileSync(path.join(mp, 'catalog.json'), 'utf8'));
      const views = catalog.views.filter((v: { kind: string }) => v.kind !== 'lvol' && v.kind !== 'volume');
      expect(views.length).toBe(lvols.length);
      for (const v of catalog.volumes) {
        expect(fs.readFileSync(path.join(mp, 'volumes', v.name, 'volume.img')).equals(fs.readFileSync(path.join(mp, v.picked, 'volume.img')))).toBe(true);
      }
      const lvolOf = (p: string) => catalog.disks.flatMap((d: { lvols: { name: string }[] }) => d.lvols).find((l: { name: string }) =>
        p.endsWith('/volume.img') ? p.split('/')[3] === l.name : p.startsWith('backing-images/') ? l.name.startsWith('bi-') : l.name.endsWith(`-snap-${path.basename(p, '.img')}`));
      for (const v of views) {
        const want = lvols.find((l) => l.name === lvolOf(v.path).name)!.sha256;
        expect(sha256(fs.readFileSync(path.join(mp, v.path))), v.path).toBe(want);
      }
      const head = views.find((v: { path: string }) => v.path.endsWith('volume.img')).path;
      const info = JSON.parse(qemuImg(['info', '--output=json', '-f', 'raw', path.join(mp, head)]));
      expect(info['virtual-size']).toBe(32 * 1024 * 1024);
      expect(fs.statSync(path.join(mp, head)).mode & 0o777).toBe(0o444);
    } finally {
      chainfsOk(['umount', mp]);
    }
    expect(isMounted(mp)).toBe(false);
  });
});

describe('compare: a volume\'s replicas on several disks', () => {
  it('identical replicas exit 0; a diverged one lists the differing ranges and exits 1', () => {
    const vol = 'pvc-cccccccc-0000-4000-8000-000000000003';
    const disks = ['1a1a1a1a', '2b2b2b2b', '3c3c3c3c'].map((id, i) => {
      const b = new SpdkDiskBuilder({ lvsName: `disk-${i}` });
      const h = b.create(`${vol}-r-${id}`, 8 * MiB);
      b.write(h, 0, Buffer.alloc(64 * 1024, 0x5a));
      b.snapshot(h, `${vol}-r-${id}-snap-s1`);
      if (i === 2) b.write(h, 3 * MiB + 8192, Buffer.alloc(4096, 0x77));
      const f = path.join(tmp, `cmp-${i}.img`);
      b.build(f);
      return f;
    });
    const same = chainfs(['compare', ...disks, '--volume', vol, '--replica', `${vol}-r-1a1a1a1a`, '--replica', `${vol}-r-2b2b2b2b`]);
    expect(same.code, same.stderr).toBe(0);
    const diff = chainfs(['compare', ...disks, '--volume', vol, '--replica', `${vol}-r-1a1a1a1a`, '--replica', `${vol}-r-3c3c3c3c`]);
    expect(diff.code, diff.stderr).toBe(1);
    expect(String(diff.stdout)).toContain(`${3 * MiB + 8192} 4096`);
    // the salvage pick: the head with the most clusters (3c3c3c3c has one, the others none)
    expect(String(chainfsOk(['inspect', ...disks]))).toMatch(new RegExp(`${vol}-r-3c3c3c3c on disk-2 \\[picked\\]`));
  });
});
