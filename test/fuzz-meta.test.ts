/**
 * Fuzzing the metadata parsers (fast-check): random text, random JSON, and
 * valid metadata mutated field by field and byte by byte. Every input either
 * parses into metadata that holds its invariants (a plain disk file name,
 * an aligned size, ...) or throws a ChainfsError naming the file in one line;
 * nothing else escapes, and nothing takes long. Then whole replica
 * directories with mutated metadata go through Replica.open, every view and
 * a read, with the same rule.
 *
 * Runs are reproducible: FUZZ_SEED picks the seed (default fixed), FUZZ_RUNS
 * scales the number of runs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LayerSet } from '../src/source/replica/layers';
import { ChainfsError } from '../src/errors';
import { parseDiskMeta, parseVolumeMeta } from '../src/source/replica/meta';
import { isDiskFile, isPlainName } from '../src/source/replica/names';
import { Replica } from '../src/source/replica/replica';
import { BASES, HEAD, S1, S2 } from './helpers/broken-replicas';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';

const SEED = Number(process.env.FUZZ_SEED ?? 20241126);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
const runs = (n: number) => ({ seed: SEED, numRuns: Math.max(1, Math.round(n * SCALE)) });
/** Test timeout that grows with FUZZ_RUNS. */
const TIMEOUT = 120_000 * Math.max(1, SCALE);

const FILE = '/replica/volume.meta';
const DISK_FILE = '/replica/volume-snap-s1.img.meta';

const VALID_VOLUME = {
  Size: 10737418240, Head: 'volume-head-003.img', Dirty: false, Rebuilding: false, Error: '',
  Parent: 'volume-snap-snap2.img', SectorSize: 512, BackingFilePath: '/host/var/lib/longhorn/backing-images/bi-3a7c1d2e/backing', Encrypted: false,
};
const VALID_DISK = {
  Name: 'volume-head-002.img', Parent: 'volume-snap-snap1.img', Removed: false, UserCreated: true,
  Created: '2024-05-01T10:07:12Z', Labels: { purpose: 'golden' },
};

/** Runs `parse`; the result must satisfy `check`, or the error must be a one-line ChainfsError about `file`. */
function parsesOrRefuses<T>(file: string, text: string, parse: (f: string, t: string) => T, check: (v: T) => void): void {
  const t0 = performance.now();
  let v: T;
  try {
    v = parse(file, text);
  } catch (e) {
    if (!(e instanceof ChainfsError)) throw new Error(`not a ChainfsError for ${JSON.stringify(text).slice(0, 200)}: ${(e as Error)?.stack ?? e}`);
    expect(e.message.startsWith(`${file}: `)).toBe(true);
    expect(e.message).not.toMatch(/[\n\r]/);
    expect(e.message.length).toBeLessThan(2000);
    return;
  } finally {
    expect(performance.now() - t0).toBeLessThan(200);
  }
  check(v);
}

function checkVolume(m: ReturnType<typeof parseVolumeMeta>): void {
  expect(Number.isSafeInteger(m.size) && m.size >= 0 && m.size % 512 === 0).toBe(true);
  expect(isPlainName(m.head) && isDiskFile(m.head)).toBe(true);
  expect(m.parent === '' || (isPlainName(m.parent) && isDiskFile(m.parent))).toBe(true);
  for (const k of ['dirty', 'rebuilding', 'encrypted'] as const) expect(typeof m[k]).toBe('boolean');
  for (const k of ['error', 'backingFilePath'] as const) expect(typeof m[k]).toBe('string');
}

function checkDisk(m: ReturnType<typeof parseDiskMeta>): void {
  expect(m.parent === '' || (isPlainName(m.parent) && isDiskFile(m.parent))).toBe(true);
  expect(typeof m.removed).toBe('boolean');
  expect(typeof m.userCreated).toBe('boolean');
  expect(typeof m.created).toBe('string');
  if (m.labels !== null) for (const v of Object.values(m.labels)) expect(typeof v).toBe('string');
}

/** Values that stress the type checks: wrong types, huge, negative, fractional, path tricks. */
const nasty = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    -512, 0, 511, 512, 1.5, 1e308, -0, 2 ** 53, 2 ** 63, Number.MAX_SAFE_INTEGER, '', '.', '..', '/', '../volume-head-001.img',
    '/etc/passwd', 'volume-head-001.img/..', 'volume-snap-../x.img', 'volume-snap-\u0000.img', 'volume-head-1.img',
    'volume-snap-.img', 'volume-snap-a.img\n', `volume-snap-${'x'.repeat(300)}.img`, 'volume.meta', true, null, [], {},
  ),
);

/** A valid object with some keys replaced by nasty values, some deleted, some added. */
function mutatedObject(valid: Record<string, unknown>): fc.Arbitrary<string> {
  const keys = Object.keys(valid);
  return fc.record({
    replace: fc.dictionary(fc.constantFrom(...keys), nasty, { maxKeys: 3 }),
    drop: fc.subarray(keys, { maxLength: 2 }),
    extra: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }),
  }).map(({ replace, drop, extra }) => {
    const o: Record<string, unknown> = { ...extra, ...valid, ...replace };
    for (const k of drop) delete o[k];
    return JSON.stringify(o);
  });
}

/** The valid text with bytes flipped, inserted, deleted, or cut short. */
function mutatedText(valid: string): fc.Arbitrary<string> {
  const edit = fc.record({ at: fc.nat(valid.length), kind: fc.constantFrom('insert', 'delete', 'replace'), ch: fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }) });
  return fc.tuple(fc.array(edit, { minLength: 1, maxLength: 6 }), fc.option(fc.nat(valid.length))).map(([edits, cut]) => {
    let t = valid;
    for (const e of edits) {
      const at = Math.min(e.at, t.length);
      if (e.kind === 'insert') t = t.slice(0, at) + e.ch + t.slice(at);
      else if (e.kind === 'delete') t = t.slice(0, at) + t.slice(at + e.ch.length);
      else t = t.slice(0, at) + e.ch + t.slice(at + e.ch.length);
    }
    return cut === null ? t : t.slice(0, cut);
  });
}

const volumeText = `${JSON.stringify(VALID_VOLUME)}\n`;
const diskText = `${JSON.stringify(VALID_DISK)}\n`;

describe('fuzz: metadata parsers', () => {
  it('the valid examples parse', () => {
    checkVolume(parseVolumeMeta(FILE, volumeText));
    checkDisk(parseDiskMeta(DISK_FILE, diskText));
  });

  it('volume.meta: random text, random JSON, mutated fields, mutated bytes', () => {
    const input = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.json({ maxDepth: 3 }),
      mutatedObject(VALID_VOLUME),
      mutatedText(volumeText),
    );
    fc.assert(fc.property(input, (text) => parsesOrRefuses(FILE, text, parseVolumeMeta, checkVolume)), runs(3000));
  }, TIMEOUT);

  it('.img.meta: random text, random JSON, mutated fields, mutated bytes', () => {
    const input = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.json({ maxDepth: 3 }),
      mutatedObject(VALID_DISK),
      mutatedText(diskText),
    );
    fc.assert(fc.property(input, (text) => parsesOrRefuses(DISK_FILE, text, parseDiskMeta, checkDisk)), runs(3000));
  }, TIMEOUT);

  it('deeply nested and very long JSON', () => {
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    const long = JSON.stringify({ ...VALID_VOLUME, Error: 'x'.repeat(500_000) });
    for (const text of [deep, long, `{"Size":${'9'.repeat(400)}}`]) parsesOrRefuses(FILE, text, parseVolumeMeta, checkVolume);
  });
});

describe('fuzz: replica directories with mutated metadata', () => {
  let tmp: string;
  let r: BuiltReplica;
  const originals = new Map<string, string>();
  const metaFiles = ['volume.meta', `${HEAD}.meta`, `${S1}.meta`, `${S2}.meta`];

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-fuzz-meta-'));
    r = buildReplica(BASES.plain, tmp);
    for (const f of metaFiles) originals.set(f, fs.readFileSync(path.join(r.dir, f), 'utf8'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** Field mutations that keep the structure plausible, so runs get past parsing into chains and reads. */
  function mutation(file: string): fc.Arbitrary<[string, string]> {
    const valid = JSON.parse(originals.get(file) ?? (file === 'volume.meta' ? volumeText : diskText)) as Record<string, unknown>;
    const names = fc.constantFrom('', HEAD, S1, S2, 'volume-head-001.img', 'volume-snap-gone.img', `../${S1}`);
    const plausible = fc.record({
      Size: fc.constantFrom(0, 512, 4096, 1 << 20, (1 << 20) + 512, 3 << 20, 2 ** 40),
      Head: names, Parent: names,
    }, { requiredKeys: [] }).map((o) => JSON.stringify({ ...valid, ...o }));
    return fc.tuple(fc.constant(file), fc.oneof(plausible, mutatedObject(valid), mutatedText(originals.get(file)!)));
  }

  it('open, every view, a read: metadata or a ChainfsError, never anything else', () => {
    const arb = fc.array(fc.oneof(...metaFiles.map(mutation)), { minLength: 1, maxLength: 3 });
    fc.assert(fc.property(arb, (edits) => {
      for (const f of metaFiles) fs.writeFileSync(path.join(r.dir, f), originals.get(f)!);
      for (const [f, text] of edits) fs.writeFileSync(path.join(r.dir, f), text);
      const t0 = performance.now();
      let layers: LayerSet | undefined;
      try {
        const replica = Replica.open(r.dir);
        layers = new LayerSet(replica);
        for (const snap of [undefined, ...replica.snapshots().map((s) => s.name)]) {
          try {
            const view = layers.view(snap);
            const n = Math.min(view.size, 64 * 1024);
            view.chain.read(Buffer.alloc(n), 0, n, 0);
            if (view.size > n) view.chain.read(Buffer.alloc(4096), 0, Math.min(4096, view.size - n), view.size - Math.min(4096, view.size - n));
          } catch (e) {
            if (!(e instanceof ChainfsError)) throw e;
          }
        }
      } catch (e) {
        if (!(e instanceof ChainfsError)) throw new Error(`not a ChainfsError for ${JSON.stringify(edits).slice(0, 300)}: ${(e as Error)?.stack ?? e}`);
        expect(e.message).not.toMatch(/[\n\r]/);
      } finally {
        layers?.close();
      }
      expect(performance.now() - t0).toBeLessThan(2000);
    }), runs(300));
    for (const f of metaFiles) fs.writeFileSync(path.join(r.dir, f), originals.get(f)!);
  }, TIMEOUT);
});
