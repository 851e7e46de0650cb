/**
 * Sanity tests of the test fixtures themselves: the replica builder writes
 * what the engine writes (names, metadata bytes, real holes, allocated
 * zeros), and its model agrees with the independent qemu oracle for every
 * view. The builder is also replayed against the engine-written fixture
 * (shared/fixtures/engine-v1.4.4) when it is present.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allocatedBlocks, blockRuns } from './helpers/extents';
import { buildOracle, type Oracle } from './helpers/oracle';
import { type BuiltReplica, buildReplica, nextHeadName, type Op, type Scenario } from './helpers/replica-builder';
import { BLOCK } from './helpers/replica-model';
import { expand, headWrap, qcow2Backing, qcow2CompressedBacking, removed, revert, SCENARIOS, trim } from './helpers/scenarios';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-fixture-builder-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const VOLUME_META = /^\{"Size":\d+,"Head":"volume-head-\d{3}\.img","Dirty":(true|false),"Rebuilding":(true|false),"Error":"","Parent":"[^"]*","SectorSize":512,"BackingFilePath":"[^"]*"\}\n$/;
const DISK_META = /^\{"Name":"[^"]+","Parent":"[^"]*","Removed":(true|false),"UserCreated":(true|false),"Created":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ","Labels":(null|\{.*\})\}\n$/;

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

/** "equal" or where two buffers first differ, so a failure names a block. */
function compareBytes(actual: Buffer, expected: Buffer): string {
  if (actual.length !== expected.length) return `length ${actual.length} != ${expected.length}`;
  if (actual.equals(expected)) return 'equal';
  let i = 0;
  while (actual[i] === expected[i]) i++;
  return `first difference at byte ${i} (block ${Math.floor(i / BLOCK)})`;
}

/** What a layer file must contain: the model's blocks, zeros elsewhere. */
function expectedLayerBytes(built: BuiltReplica, file: string): Buffer {
  const layer = built.model.layer(file);
  const out = Buffer.alloc(layer.size);
  for (const [index, data] of layer.blocks) data.copy(out, index * BLOCK);
  return out;
}

describe.each(SCENARIOS.map((s) => [s.name, s] as const))('scenario %s', (_name, s) => {
  let built: BuiltReplica;
  let oracle: Oracle;
  beforeAll(() => {
    built = buildReplica(s, tmp);
    oracle = buildOracle(s, tmp);
  });

  it('leaves exactly the engine files in the replica directory', () => {
    const expected = ['volume.meta', ...built.views.flatMap((v) => [v.file, `${v.file}.meta`])].sort();
    expect(fs.readdirSync(built.dir).sort()).toEqual(expected);
    expect(fs.statSync(built.dir).mode & 0o777).toBe(0o700);
    expect(built.dir).toBe(path.join(built.root, 'replicas', `${s.name}-abcd1234`));
    for (const v of built.views) expect(fs.statSync(path.join(built.dir, v.file)).nlink).toBe(1);
  });

  it('writes volume.meta as the engine does', () => {
    const text = fs.readFileSync(path.join(built.dir, 'volume.meta'), 'utf8');
    expect(text).toMatch(VOLUME_META);
    const meta = readJson(path.join(built.dir, 'volume.meta'));
    const head = built.views[0];
    expect(head?.snapshot).toBeUndefined();
    expect(meta['Head']).toBe(head?.file);
    expect(meta['Size']).toBe(head?.size);
    expect(meta['Parent']).toBe(readJson(path.join(built.dir, `${head?.file}.meta`))['Parent']);
    expect(meta['Dirty']).toBe(false);
    expect(meta['BackingFilePath']).toBe(built.backingPath ? `/host${built.backingPath}` : '');
  });

  it('writes every .img.meta as the engine does', () => {
    for (const v of built.views) {
      const text = fs.readFileSync(path.join(built.dir, `${v.file}.meta`), 'utf8');
      expect(text, v.file).toMatch(DISK_META);
      const meta = readJson(path.join(built.dir, `${v.file}.meta`));
      if (v.snapshot === undefined || v.removed) expect(meta['Name'], v.file).toBe(v.file);
      else expect(meta['Name'], `${v.file} keeps the old head's name (#13728)`).toMatch(/^volume-head-\d{3}\.img$/);
      if (v.snapshot === undefined) expect(meta['UserCreated']).toBe(false);
      expect(meta['Removed']).toBe(v.removed);
    }
  });

  it('allocates exactly the written blocks: real holes, allocated zeros', () => {
    for (const v of built.views) {
      const file = path.join(built.dir, v.file);
      const expected = built.model.allocated(v.file);
      expect(allocatedBlocks(file), v.file).toEqual(expected);
      // st_blocks also counts ext4 extent-tree blocks, hence the small slack.
      const allocated = fs.statSync(file).blocks * 512;
      expect(allocated, v.file).toBeGreaterThanOrEqual(expected.length * BLOCK);
      expect(allocated, v.file).toBeLessThanOrEqual(expected.length * BLOCK + 16 * BLOCK);
      expect(fs.statSync(file).size, v.file).toBe(v.size);
    }
  });

  it('stores the model bytes in every layer file', () => {
    for (const v of built.views) {
      const actual = fs.readFileSync(path.join(built.dir, v.file));
      expect(compareBytes(actual, expectedLayerBytes(built, v.file)), v.file).toBe('equal');
    }
  });

  // Only scenarios with a backing image get this test (none is skipped).
  if (s.backing !== undefined) it('writes a backing image that reads as the model', () => {
    const raw = path.join(tmp, `${s.name}-backing-check.raw`);
    execFileSync('qemu-img', ['convert', '-q', '-O', 'raw', built.backingPath as string, raw]);
    expect(compareBytes(fs.readFileSync(raw), built.model.backing as Buffer)).toBe('equal');
    fs.rmSync(raw);
    expect(fs.existsSync(`${built.backingPath}.cfg`)).toBe(true);
  });

  it('agrees with the qemu oracle for every view', () => {
    expect([...oracle.views.keys()].sort()).toEqual(built.views.map((v) => v.file).sort());
    for (const v of built.views) {
      const raw = oracle.views.get(v.file) as string;
      expect(fs.statSync(raw).size, v.file).toBe(v.size);
      expect(compareBytes(fs.readFileSync(raw), built.model.view(v.file)), v.file).toBe('equal');
    }
  });
});

describe('head numbering', () => {
  it('keeps only the last digit, like the engine', () => {
    expect(nextHeadName('volume-head-000.img')).toBe('volume-head-001.img');
    expect(nextHeadName('volume-head-009.img')).toBe('volume-head-010.img');
    expect(nextHeadName('volume-head-010.img')).toBe('volume-head-001.img');
    expect(nextHeadName('volume-head-019.img')).toBe('volume-head-010.img');
  });

  it('wraps after twelve snapshots, and snapshot metas carry the old head names', () => {
    const built = buildReplica(headWrap, tmp);
    expect(built.views[0]?.file).toBe('volume-head-002.img');
    const oldHeads = ['000', '001', '002', '003', '004', '005', '006', '007', '008', '009', '010', '001'];
    oldHeads.forEach((n, i) => {
      const meta = readJson(path.join(built.dir, `volume-snap-s${i + 1}.img.meta`));
      expect(meta['Name']).toBe(`volume-head-${n}.img`);
      expect(meta['Parent']).toBe(i === 0 ? '' : `volume-snap-s${i}.img`);
    });
  });
});

describe('scenario specifics', () => {
  it('expand: snapshot files keep the size of their time, the expansion snapshot is labelled', () => {
    const built = buildReplica(expand, tmp);
    const sizes = Object.fromEntries(built.views.map((v) => [v.file, v.size]));
    expect(sizes).toEqual({
      'volume-head-004.img': 16 << 20,
      'volume-snap-a.img': 8 << 20,
      'volume-snap-expand-12582912.img': 8 << 20,
      'volume-snap-b.img': 12 << 20,
      'volume-snap-expand-16777216.img': 12 << 20,
    });
    expect(fs.readFileSync(path.join(built.dir, 'volume-snap-expand-12582912.img.meta'), 'utf8')).toBe(
      '{"Name":"volume-head-001.img","Parent":"volume-snap-a.img","Removed":false,"UserCreated":false,' +
        '"Created":"2024-05-01T10:00:00Z","Labels":{"replica-expansion":"12582912"}}\n',
    );
    expect(readJson(path.join(built.dir, 'volume.meta'))['Size']).toBe(16 << 20);
  });

  it('revert: the new head hangs off the target, later snapshots stay off-chain', () => {
    const built = buildReplica(revert, tmp);
    const chain = Object.fromEntries(built.views.map((v) => [v.file, v.onHeadChain]));
    expect(chain).toEqual({
      'volume-head-005.img': true,
      'volume-snap-s1.img': true,
      'volume-snap-s2.img': false,
      'volume-snap-s3.img': false,
      'volume-snap-s4.img': true,
    });
    expect(readJson(path.join(built.dir, 'volume-snap-s4.img.meta'))['Parent']).toBe('volume-snap-s1.img');
    // Block 512 (2 MiB) was written in s2 only; the new branch must read zeros around the 10 bytes it wrote.
    const view = built.model.view('volume-head-005.img');
    expect(view.subarray(2 << 20, (2 << 20) + 10).every((b) => b === 0)).toBe(true);
  });

  it('removed: metas say Removed with their own name, the head view still reads through them', () => {
    const built = buildReplica(removed, tmp);
    for (const s of ['s2', 's3']) {
      const meta = readJson(path.join(built.dir, `volume-snap-${s}.img.meta`));
      expect(meta).toMatchObject({ Name: `volume-snap-${s}.img`, Removed: true });
    }
    const head = built.model.view(built.views[0]?.file as string);
    expect(head.subarray(4096, 8192)).toEqual(built.model.layer('volume-snap-s2.img').blocks.get(1));
  });

  it('trim: punched head blocks fall through to the snapshot, the backing image, or zeros', () => {
    const built = buildReplica(trim, tmp);
    const head = built.views[0]?.file as string;
    const view = built.model.view(head);
    const s1 = built.model.view('volume-snap-s1.img');
    const backing = built.model.backing as Buffer;
    const same = (a: Buffer, b: Buffer, from: number, to: number): string => compareBytes(a.subarray(from, to), b.subarray(from, to));
    // Blocks 1, 3, 4 were trimmed (block 2 was rewritten whole after the trim): s1's data shows.
    expect(same(view, s1, 1 * BLOCK, 2 * BLOCK)).toBe('equal');
    expect(same(view, s1, 3 * BLOCK, 5 * BLOCK)).toBe('equal');
    expect(same(view, s1, 2 * BLOCK, 3 * BLOCK)).not.toBe('equal');
    // Blocks 8-15: s1 never wrote there, the backing image shows.
    expect(same(view, backing, 8 * BLOCK, 16 * BLOCK)).toBe('equal');
    // The allocated zeros at 3 MiB were trimmed: s1's data shows again.
    expect(same(view, s1, 3 << 20, (3 << 20) + 4 * BLOCK)).toBe('equal');
    // Past the 2 MiB backing image: zeros.
    expect(view.subarray(2 << 20, (2 << 20) + BLOCK).every((b) => b === 0)).toBe(true);
    expect(allocatedBlocks(path.join(built.dir, 'volume-snap-s2.img'))).toEqual([0, 2, 5, 6, 7, 1280, 1281]);
  });

  it('qcow2 backing: zero clusters with and without a host cluster', () => {
    const built = buildReplica(qcow2Backing, tmp);
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', built.backingPath as string], { encoding: 'utf8' })) as {
      start: number;
      zero: boolean;
      data: boolean;
      offset?: number;
    }[];
    expect(map.some((e) => e.start === 128 * 1024 && e.zero && !e.data && e.offset !== undefined)).toBe(true);
    expect(map.some((e) => e.start === 4 << 20 && e.zero && !e.data && e.offset === undefined)).toBe(true);
  });

  it('compressed qcow2 backing: holds compressed clusters', () => {
    const built = buildReplica(qcow2CompressedBacking, tmp);
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', built.backingPath as string], { encoding: 'utf8' })) as {
      data: boolean;
      offset?: number;
    }[];
    // qemu-img map gives no host offset for compressed data.
    expect(map.some((e) => e.data && e.offset === undefined)).toBe(true);
    expect(map.some((e) => e.data && e.offset !== undefined)).toBe(true);
  });

  it('writes Dirty and Rebuilding as asked', () => {
    const built = buildReplica({ name: 'flags', size: 1 << 20, ops: [], dirty: true, rebuilding: true }, tmp);
    expect(fs.readFileSync(path.join(built.dir, 'volume.meta'), 'utf8')).toBe(
      '{"Size":1048576,"Head":"volume-head-000.img","Dirty":true,"Rebuilding":true,"Error":"","Parent":"","SectorSize":512,"BackingFilePath":""}\n',
    );
  });

  it('refuses histories whose engine result it cannot know', () => {
    const write = (offset: number, length: number): Op => ({ op: 'write', offset, length, data: { kind: 'seed', seed: 5 } });
    const partialAfterTrim: Scenario = { name: 'ambiguous-a', size: 1 << 20, ops: [write(0, 8192), { op: 'trim', offset: 0, length: 8192 }, write(10, 10)] };
    expect(() => buildReplica(partialAfterTrim, tmp)).toThrow(/trimmed since the last reopen/);
    const trimOverRemoved: Scenario = {
      name: 'ambiguous-b',
      size: 1 << 20,
      ops: [write(0, 4096), { op: 'snapshot', name: 'x' }, { op: 'remove', name: 'x' }, { op: 'trim', offset: 0, length: 4096 }],
    };
    expect(() => buildReplica(trimOverRemoved, tmp)).toThrow(/removed snapshot/);
  });
});

/** The engine-written fixture: replay its operations and compare files, metadata and view hashes. */
const ENGINE_FIXTURE = path.resolve(__dirname, 'fixtures/engine-v1.4.4/chain-basic/manifest.json');

interface EngineManifest {
  volume_size: number;
  replica_dir: string;
  operations: { op: string; offset?: number; length?: number; data?: { kind: string; seed?: number }; name?: string; user_created?: boolean; labels?: Record<string, string> }[];
  expected_views: { disk: string; sha256: string }[];
  files_after_generation: { name: string; apparent_size: number; data_extents: [number, number][] | null; content?: string }[];
}

function scenarioFromManifest(m: EngineManifest): Scenario {
  const created = '2026-11-26T12:52:09Z';
  const ops: Op[] = [];
  for (const o of m.operations) {
    if (o.op === 'write') {
      const data = o.data?.kind === 'zero' ? { kind: 'zero' as const } : { kind: 'seed' as const, seed: o.data?.seed as number };
      ops.push({ op: 'write', offset: o.offset as number, length: o.length as number, data });
    } else if (o.op === 'snapshot') {
      ops.push({ op: 'snapshot', name: o.name as string, userCreated: o.user_created ?? false, labels: o.labels ?? null, created });
    }
  }
  return { name: path.basename(m.replica_dir).replace(/-[^-]+$/, ''), size: m.volume_size, ops };
}

describe('against the engine-written fixture chain-basic', () => {
  let manifest: EngineManifest;
  let built: BuiltReplica;
  let oracle: Oracle;
  beforeAll(() => {
    manifest = JSON.parse(fs.readFileSync(ENGINE_FIXTURE as string, 'utf8')) as EngineManifest;
    const s = scenarioFromManifest(manifest);
    built = buildReplica(s, tmp);
    oracle = buildOracle(s, tmp);
  });

  it('writes the same layer files with the same extents', () => {
    for (const f of manifest.files_after_generation.filter((x) => x.name.endsWith('.img'))) {
      const file = path.join(built.dir, f.name);
      expect(fs.statSync(file).size, f.name).toBe(f.apparent_size);
      expect(blockRuns(allocatedBlocks(file)), f.name).toEqual(f.data_extents ?? []);
    }
  });

  it('writes byte-identical metadata', () => {
    for (const f of manifest.files_after_generation.filter((x) => x.name.endsWith('.meta'))) {
      expect(fs.readFileSync(path.join(built.dir, f.name), 'utf8'), f.name).toBe(f.content);
    }
  });

  it("reproduces the engine's view hashes in the model and in the oracle", () => {
    const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
    for (const v of manifest.expected_views) {
      expect(sha(built.model.view(v.disk)), `model ${v.disk}`).toBe(v.sha256);
      expect(sha(fs.readFileSync(oracle.views.get(v.disk) as string)), `oracle ${v.disk}`).toBe(v.sha256);
    }
  });
});
