/**
 * `--json` is one documented schema (issue #14 item 3): every command's
 * real JSON output, on every kind of source, is validated against the JSON
 * Schemas in docs/json.md (a validator for the small keyword subset the
 * page uses is below, so that the page and the outputs cannot drift);
 * warnings are {code, message, file?}; a failure with --json is
 * {"error": {code, message}} on stdout besides the stderr line.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildSampleTarget, type SampleTarget } from './helpers/backupstore-builder';
import { chainfs, chainfsOk } from './helpers/cli';
import { unmountAll } from './helpers/mount';
import { buildNode, type BuiltNode } from './helpers/node-builder';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking, rawBacking, removed } from './helpers/scenarios';
import { FIXTURE_NAMES, unpackFixture } from './helpers/spdk-oracle';

const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

// --- the schemas of docs/json.md, and a validator for their keywords ------

type Schema = {
  type?: string | string[]; properties?: Record<string, Schema>; required?: string[]; items?: Schema;
  enum?: unknown[]; oneOf?: Schema[]; additionalProperties?: boolean | Schema; $ref?: string; $defs?: Record<string, Schema>;
};

const DOC = fs.readFileSync(path.join(__dirname, '..', 'docs', 'json.md'), 'utf8');
const SCHEMAS = new Map<string, Schema>();
for (const m of DOC.matchAll(/<!-- schema: ([\w-]+) -->\n```json\n([\s\S]*?)\n```/g)) SCHEMAS.set(m[1], JSON.parse(m[2]) as Schema);
const DEFS = SCHEMAS.get('defs')!.$defs!;

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** Every violation of `schema` by `v`, as `path: what` (empty: valid). */
function check(v: unknown, schema: Schema, at = '$'): string[] {
  if (schema.$ref) return check(v, DEFS[schema.$ref.replace('#/$defs/', '')], at);
  const errs: string[] = [];
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = typeOf(v);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) return [`${at}: ${t}, expected ${types.join('|')}`];
  }
  if (schema.enum && !schema.enum.includes(v)) errs.push(`${at}: ${JSON.stringify(v)} not in ${JSON.stringify(schema.enum)}`);
  if (schema.oneOf && schema.oneOf.filter((s) => check(v, s, at).length === 0).length !== 1) errs.push(`${at}: matches not exactly one of oneOf`);
  if (Array.isArray(v) && schema.items) v.forEach((x, i) => errs.push(...check(x, schema.items!, `${at}[${i}]`)));
  if (typeOf(v) === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of schema.required ?? []) if (!(k in o)) errs.push(`${at}: missing ${k}`);
    for (const [k, x] of Object.entries(o)) {
      const sub = schema.properties?.[k];
      if (sub) errs.push(...check(x, sub, `${at}.${k}`));
      else if (schema.additionalProperties === false) errs.push(`${at}: unexpected key ${k}`);
      else if (typeof schema.additionalProperties === 'object') errs.push(...check(x, schema.additionalProperties, `${at}.${k}`));
    }
  }
  return errs;
}

function expectSchema(doc: unknown, name: string): void {
  const schema = SCHEMAS.get(name);
  expect(schema, `docs/json.md has a schema "${name}"`).toBeDefined();
  expect(check(doc, schema!)).toEqual([]);
}

const json = (args: string[]) => JSON.parse(chainfsOk(args).toString()) as unknown;

// --- fixtures -------------------------------------------------------------

let tmp: string;
let plain: BuiltReplica;
let backed: BuiltReplica;
let dirty: BuiltReplica;
let node: BuiltNode;
let target: SampleTarget;
let v2: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-op-json-'));
  plain = buildReplica(noBacking, tmp);
  backed = buildReplica(rawBacking, tmp);
  dirty = buildReplica({ ...removed, name: 'dirty', dirty: true }, tmp);
  node = buildNode([{ cfg: 'v1.11', diskUUID: '0a1b0000-0000-4000-8000-000000000009', replicas: [
    { id: '1a2b3c4d', scenario: { ...noBacking, name: 'pvc-json' }, headMtimeNs: 1_764_496_800_000_000_000n },
  ] }], tmp);
  target = buildSampleTarget(path.join(tmp, 'target'));
  v2 = unpackFixture(FIXTURE_NAMES[0], tmp);
}, 120_000);
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('docs/json.md', () => {
  it('holds a schema for every command that prints JSON', () => {
    for (const n of ['defs', 'inspect', 'inspect-replica', 'inspect-node', 'inspect-backupstore', 'inspect-spdk', 'map', 'export', 'compare', 'diff', 'verify', 'mounts', 'error']) {
      expect(SCHEMAS.has(n), n).toBe(true);
    }
    // the validator is not a rubber stamp
    expect(check({ start: 'x' }, SCHEMAS.get('map')!.items!)).not.toEqual([]);
    expect(check([{ code: 1, message: 'm' }], DEFS.warnings)).not.toEqual([]);
  });
});

describe('every command against its schema', () => {
  it('inspect, on every kind of source', () => {
    for (const r of [plain, backed, dirty]) {
      const doc = json(['inspect', r.dir, '--json']);
      expectSchema(doc, 'inspect');
      expectSchema(doc, 'inspect-replica');
    }
    const b = json(['inspect', backed.dir, '--json']) as { backing: { size: number; virtualSize: number } };
    expect(b.backing.size).toBe(rawBacking.backing!.size);
    expect(b.backing.virtualSize).toBe(rawBacking.backing!.size);
    for (const [src, name] of [[node.roots, 'inspect-node'], [[target.dir], 'inspect-backupstore'], [[v2], 'inspect-spdk']] as const) {
      const doc = json(['inspect', ...src, '--json']);
      expectSchema(doc, 'inspect');
      expectSchema(doc, name);
    }
  });

  it('warnings are objects with stable codes, and the head is named like every layer', () => {
    const doc = json(['inspect', dirty.dir, '--json']) as { warnings: Array<{ code: string; message: string; file?: string }>; chain: Array<{ file: string; name: string; kind: string }> };
    expect(doc.warnings).toContainEqual({ code: 'dirty', message: expect.stringMatching(/Dirty is true/), file: path.join(dirty.dir, 'volume.meta') });
    const head = doc.chain.find((d) => d.kind === 'head')!;
    expect(head.file).toMatch(/^volume-head-\d{3}\.img$/);
    expect(typeof head.name).toBe('string');
  });

  it('the codes of real warnings: a removed snapshot, a recovered volume.meta', () => {
    const snap = (json(['export', dirty.dir, path.join(tmp, 'removed.raw'), '--snapshot', 's2', '--json', '-q']) as { warnings: Array<{ code: string }> }).warnings;
    expect(snap.map((w) => w.code)).toEqual(expect.arrayContaining(['dirty', 'removed-snapshot']));
    const r = buildReplica({ ...noBacking, name: 'no-meta' }, tmp);
    fs.writeFileSync(path.join(r.dir, 'volume.meta'), '');
    const doc = json(['inspect', r.dir, '--json']) as { warnings: Array<{ code: string; file?: string }> };
    expect(doc.warnings).toContainEqual(expect.objectContaining({ code: 'meta-recovered', file: path.join(r.dir, 'volume.meta') }));
  });

  it('map --json and --output=json: the same document', () => {
    const a = json(['map', plain.dir, '--json']);
    expectSchema(a, 'map');
    expect(json(['map', plain.dir, '--output=json'])).toEqual(a);
    expect(json(['map', plain.dir, '--output', 'json'])).toEqual(a);
  });

  it('export --json: raw, qcow2 and the Longhorn layout (backingCfg an object)', () => {
    expectSchema(json(['export', plain.dir, path.join(tmp, 'e.raw'), '--json']), 'export');
    expectSchema(json(['export', plain.dir, path.join(tmp, 'e.qcow2'), '--format', 'qcow2', '--checksum', '--json']), 'export');
    const lh = json(['export', plain.dir, path.join(tmp, 'bi-json-0badbeef'), '--layout', 'longhorn', '--json']) as { backingCfg: unknown };
    expectSchema(lh, 'export');
    expect(typeof lh.backingCfg).toBe('object');
    expect(lh.backingCfg).not.toBeNull();
  });

  it('compare --json (identical and different), diff --json and verify --json', () => {
    const same = chainfs(['compare', plain.dir, plain.dir, '--json']);
    expect(same.code).toBe(0);
    expectSchema(JSON.parse(same.stdout.toString()), 'compare');
    const diff = chainfs(['compare', plain.dir, backed.dir, '--json']);
    expect(diff.code).toBe(1);
    expectSchema(JSON.parse(diff.stdout.toString()), 'compare');
    const d = chainfs(['diff', plain.dir, '--from', 'user-snap-2', '--json']);
    expect(d.code).toBe(1);
    const ranges = JSON.parse(d.stdout.toString()) as unknown[];
    expect(ranges.length).toBeGreaterThan(0);
    expectSchema(ranges, 'diff');
    const v = chainfs(['verify', target.dir, '--json']);
    expect(v.code).toBe(0);
    expectSchema(JSON.parse(v.stdout.toString()), 'verify');
  });

  it('mounts --json; a source named by a relative path is listed absolute (a replica, a backup target, one whose path holds a comma)', () => {
    const comma = path.join(tmp, 'a,b', path.basename(plain.dir));
    fs.cpSync(plain.dir, comma, { recursive: true });
    for (const dir of [plain.dir, target.dir, comma]) {
      const mp = path.join(tmp, 'mp');
      fs.mkdirSync(mp, { recursive: true });
      chainfsOk(['mount', path.basename(dir), mp], { cwd: path.dirname(dir) });
      try {
        const list = json(['mounts', '--json']);
        expectSchema(list, 'mounts');
        const mine = (list as Array<{ mountPoint: string; source: string }>).find((m) => m.mountPoint === mp);
        expect(mine?.source).toBe(dir);
      } finally {
        chainfsOk(['umount', mp]);
      }
    }
  });
});

describe('--help says the conventions', () => {
  it('map, inspect, export point at docs/json.md; umount names its busy advice; mounts is listed', () => {
    const help = (c: string) => chainfs([c, '--help']).stdout.toString();
    expect(help('map')).toMatch(/--output <fmt>[\s\S]*docs\/json\.md/);
    expect(help('inspect')).toMatch(/docs\/json\.md[\s\S]*"error"/);
    expect(help('export')).toMatch(/OUT -[\s\S]*OUT a dir[\s\S]*docs\/json\.md/);
    expect(help('umount')).toMatch(/losetup -d/);
    expect(chainfs(['--help']).stdout.toString()).toMatch(/mounts \[options\] +list this host's chainfs mounts/);
  });
});

describe('a failure with --json', () => {
  const cases: Array<[string, string[], number, string]> = [
    ['no such snapshot', ['map', '--json', '--snapshot', 'nope'], 1, 'not-found'],
    ['an unknown option', ['inspect', '--json', '--bogus'], 2, 'usage'],
    ['an existing OUT', ['export', '--json', '-q'], 1, 'exists'],
    ['not a source', ['inspect', '--json'], 1, 'not-a-source'],
    // usage errors exit 2 wherever they are caught, as the README says
    ['a wrong --output', ['map', '--json', '--output', 'xml'], 2, 'usage'],
    ['--compress on a raw export', ['export', '--json', '-q', '--compress'], 2, 'usage'],
    ['verify --jobs 0', ['verify', '--json', '--jobs', '0'], 2, 'usage'],
    ['--jobs past 256 (read-ahead would start that many fetches at once)', ['map', '--json', '--jobs', '100000'], 2, 'usage'],
    // options that do not go together, or not with this kind of source: known only once it is opened
    ['--snapshot with --head', ['map', '--json', '--snapshot', 's', '--head', 'volume-head-001.img'], 2, 'usage'],
    ['--lvol on a replica directory', ['map', '--json', '--lvol', 'x'], 2, 'usage'],
    ['inspect --volume on a replica directory (it would be ignored)', ['inspect', '--json', '--volume', 'x'], 2, 'usage'],
  ];
  for (const [what, args, exit, code] of cases) {
    it(`${what}: {"error": {code: ${code}, message}} on stdout, the same line on stderr`, () => {
      const existing = path.join(tmp, 'exists.raw');
      fs.writeFileSync(existing, '');
      const full = args[0] === 'export' ? [...args, plain.dir, existing] : args[0] === 'inspect' && code === 'not-a-source' ? [...args, tmp] : [...args, plain.dir];
      const r = chainfs(full);
      expect(r.code).toBe(exit);
      const doc = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
      expectSchema(doc, 'error');
      expect(doc.error.code).toBe(code);
      expect(r.stderr.trim().split('\n').pop()).toBe(`chainfs: ${doc.error.message}`);
    });
  }

  it('an option for other sources on a replica directory says which sources it is for', () => {
    const r = chainfs(['map', '--json', '--replica', 'r', plain.dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--replica does not apply to a replica directory \(it is for data roots and v2 disks\)/);
  });

  it('a FIFO where the head\'s .meta should be: corrupt, not not-a-source', () => {
    const dir = path.join(tmp, 'fifo-meta');
    fs.cpSync(plain.dir, dir, { recursive: true });
    const meta = fs.readdirSync(dir).find((f) => /^volume-head-\d+\.img\.meta$/.test(f))!;
    fs.rmSync(path.join(dir, meta));
    execFileSync('mkfifo', [path.join(dir, meta)]);
    const r = chainfs(['map', '--json', dir]);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
    expect(doc.error.message).toMatch(/not a regular file/);
    expect(doc.error.code).toBe('corrupt');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an OUT inside the source: refused (the safety refusal docs/json.md names), not failed', () => {
    const out = path.join(plain.dir, 'inside.raw');
    const r = chainfs(['export', '--json', '-q', plain.dir, out]);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
    expect(doc.error.message).toMatch(/is inside the source/);
    expect(doc.error.code).toBe('refused');
    expect(fs.existsSync(out)).toBe(false);
  });

  it('a backup target scheme chainfs does not read (azblob://, gs://): unsupported, not failed', () => {
    for (const url of ['azblob://container/prefix', 'gs://bucket/prefix']) {
      const r = chainfs(['inspect', '--json', url]);
      expect(r.code, url).toBe(1);
      const doc = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
      expect(doc.error.message).toMatch(/are not read by chainfs/);
      expect(doc.error.code, url).toBe('unsupported');
    }
  });

  it('without --json, stdout stays empty', () => {
    const r = chainfs(['map', '--snapshot', 'nope', plain.dir]);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr).toMatch(/no snapshot named "nope"/);
  });
});
