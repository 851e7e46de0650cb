/**
 * Longhorn's lvol names (longhorn-spdk-engine pkg/types): what each name
 * means, and a rebuilding replica (an external-snapshot clone whose data is
 * partly on another node) listed but not served.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { classify } from '../src/source/spdk/names';
import { openSpdk } from '../src/source/spdk/open';
import { MiB, SpdkDiskBuilder } from './helpers/spdk-builder';
import { REP_A, REP_B, VOL_B, bytes } from './helpers/spdk-scenarios';
import { readView } from './helpers/spdk-oracle';

const LVS = '0ef85146-179d-4fb3-a62c-c9bca16fb413';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-n-'));
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

describe('Longhorn lvol names', () => {
  it.each([
    ['pvc-1-r-1a2b3c4d', { role: 'replica-head', volume: 'pvc-1', replica: 'pvc-1-r-1a2b3c4d' }],
    ['pvc-1-r-1a2b3c4d-snap-daily-1', { role: 'snapshot', volume: 'pvc-1', replica: 'pvc-1-r-1a2b3c4d', snapshot: 'daily-1' }],
    ['pvc-1-r-1a2b3c4d-snap-0e5b8c1d-7a2f-4e63-9d10-b4c7f2a8e5d1', { role: 'snapshot', snapshot: '0e5b8c1d-7a2f-4e63-9d10-b4c7f2a8e5d1' }],
    ['pvc-1-r-1a2b3c4d-rebuilding', { role: 'transient', replica: 'pvc-1-r-1a2b3c4d', transient: 'rebuilding' }],
    ['pvc-1-r-1a2b3c4d-expired-9f8e7d6c', { role: 'transient', transient: 'expired' }],
    ['pvc-1-r-1a2b3c4d-cloning', { role: 'transient', transient: 'cloning' }],
    ['pvc-1-r-1a2b3c4d-cloning-tmp', { role: 'transient', transient: 'cloning' }],
    ['pvc-1-r-1a2b3c4d-clone-ep-daily-1-tmp-head', { role: 'transient', transient: 'clone entry point' }],
    [`bi-ubuntu-disk-${LVS}`, { role: 'backing-image', backingImage: 'ubuntu' }],
    [`bi-ubuntu-disk-${LVS}-temp-head`, { role: 'transient', backingImage: 'ubuntu', transient: 'backing image temp head' }],
    ['bi-ubuntu-disk-11111111-2222-4333-8444-555555555555', { role: 'other' }],
    ['shard-pvc-1-0', { role: 'other' }],
    ['my-own-lvol', { role: 'other' }],
  ])('%s', (name, want) => {
    expect(classify(name, LVS)).toMatchObject(want);
  });
});

describe('a replica being rebuilt', () => {
  it('an external-snapshot clone (EXTSNAP) is listed, not served; the rest is', async () => {
    const b = new SpdkDiskBuilder();
    const h = b.create(REP_A, 4 * MiB);
    b.setInternal(h, 'EXTSNAP', Buffer.from('9d1c0a6e-55aa-4b1c-8f00-3e2d1c0b9a87\0'));
    b.write(h, 0, bytes(4096));
    b.create(`${REP_A}-rebuilding`, 4 * MiB);
    const ok = b.create(REP_B, 4 * MiB);
    b.write(ok, MiB, bytes(4096));
    const file = path.join(dir, 'rebuild.img');
    b.build(file);
    const cat = openSpdk([file]);
    expect(cat.view(`lvols/${REP_A}.img`)!.problem).toMatch(/external snapshot \(EXTSNAP: another bdev, e\.g\. a rebuild source on another node\): its unwritten data is not on this disk/);
    expect(() => cat.select({ volume: REP_A.replace(/-r-.*/, '') })).toThrow(/has no replica with a readable head: .*external snapshot/);
    expect((await readView(cat.select({ volume: VOL_B }))).equals(b.read(ok))).toBe(true);
    expect(cat.render()).toMatch(/PROBLEM: its parent is an external snapshot/);
    cat.close();
  });
});

describe('names as paths', () => {
  it('256-byte names (the fork\'s maximum) fit NAME_MAX; a slash is escaped; select still finds them', async () => {
    const b = new SpdkDiskBuilder();
    const rep = `${'v'.repeat(200)}-r-1a2b3c4d`;
    const h = b.create(rep, 2 * MiB);
    b.write(h, 0, bytes(4096));
    const snapName = `${rep}-snap-${'s'.repeat(256 - rep.length - 6)}`;
    expect(snapName.length).toBe(256);
    b.snapshot(h, snapName);
    const odd = b.create('x'.repeat(256), MiB);
    const slash = b.create('a/b', MiB);
    const file = path.join(dir, 'names.img');
    b.build(file);
    const cat = openSpdk([file]);
    for (const v of cat.views()) for (const part of v.path.split('/')) expect(Buffer.byteLength(part), v.path).toBeLessThanOrEqual(255);
    const longSnap = cat.select({ lvol: snapName });
    expect(longSnap.path).toMatch(/^lvols\/v{200}-r-1a2b3c4d-snap-s+~[0-9a-f]{8}\.img$/);
    expect((await readView(longSnap)).equals(b.read(b.byName(snapName).id))).toBe(true);
    expect(cat.select({ lvol: 'x'.repeat(256) }).path).toMatch(/^lvols\/x+~[0-9a-f]{8}\.img$/);
    expect(cat.select({ lvol: 'a/b' }).path).toBe('lvols/a%2Fb.img');
    expect((await readView(cat.view('lvols/a%2Fb.img')!)).equals(b.read(slash))).toBe(true);
    expect(cat.select({ replica: rep, snapshot: 's'.repeat(10) }).path).toMatch(/\/snapshots\/s+\.img$/);
    expect(odd).toBeGreaterThan(0);
    cat.close();
  });
});
