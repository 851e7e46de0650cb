/**
 * Issue #12's lazy listing: a mount of a backup target reads the volume
 * names only; a volume's cfgs are read when its backups/ directory is first
 * looked up or listed, once however many ask; a listing that fails answers
 * EIO, is logged, and is tried again on the next access. The real CLI mounts
 * (its own process) a target the builder wrote, on S3 (the helpers' listing
 * server, which counts requests: s3rver 3.7.1 cannot delimiter-list
 * volumes/XX/YY/, format document section 3) and in a directory; every
 * backup reads byte for byte as the builder's own restore of its blocks.
 *
 * The S3 side is served from this process, so everything here that makes
 * the daemon talk to it is asynchronous (spawn, fs.promises).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BLOCK, TargetBuilder, pattern } from './helpers/backupstore-builder';
import { s3Env, startListingServer, type ListingServer } from './helpers/backupstore-s3';
import { CHAINFS } from './helpers/cli';

const BUCKET = 'lh-backups';
const SIZE = 4 * BLOCK;
/** Volume → backup → the image Longhorn's restore writes (the builder's oracle). */
const expected = new Map<string, Map<string, Buffer>>();
/** A volume whose one backup cfg is damaged (not JSON): listed as a problem, never served. */
const DAMAGED = { volume: 'vol-b', backup: 'backup-b-bad' };

let tmp: string;
let target: string;
let lister: ListingServer;
let proxy: Proxy;
const mounts: string[] = [];

/** The listing server behind a gate: requests whose path matches `fail` get 403 AccessDenied; `hold` ones wait for `release`. */
interface Proxy {
  endpoint: string;
  fail?: RegExp;
  hold?: RegExp;
  held: (() => void)[];
  release(): void;
  close(): Promise<void>;
}

async function startProxy(to: string): Promise<Proxy> {
  const up = new URL(to);
  const p: Proxy = {
    endpoint: '', held: [],
    release: () => {
      p.hold = undefined;
      for (const go of p.held.splice(0)) go();
    },
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
  const server = http.createServer((req, res) => {
    const what = decodeURIComponent(req.url ?? '');
    if (p.fail?.test(what)) {
      res.writeHead(403, { 'content-type': 'application/xml' }).end('<Error><Code>AccessDenied</Code><Message>injected by the test</Message></Error>');
      return;
    }
    const forward = () => {
      const out = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      out.on('error', () => res.destroy());
      req.pipe(out);
    };
    if (p.hold?.test(what)) p.held.push(forward);
    else forward();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  p.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return p;
}

/** Runs a command without blocking this process (which serves S3): exit code, stdout, stderr. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', (code) => resolve({ code, out, err }));
  });
}

async function mount(source: string, name: string, env: NodeJS.ProcessEnv = process.env): Promise<{ mp: string; log: string }> {
  const mp = path.join(tmp, name);
  const log = path.join(tmp, `${name}.log`);
  fs.mkdirSync(mp);
  const r = await run(CHAINFS, ['mount', source, mp, '--log', log], env);
  if (r.code !== 0) throw new Error(`chainfs mount failed (${r.code}): ${r.err}`);
  mounts.push(mp);
  return { mp, log };
}

async function unmount(mp: string): Promise<void> {
  const r = await run(CHAINFS, ['umount', mp]);
  expect(r.code, r.err).toBe(0);
  mounts.splice(mounts.indexOf(mp), 1);
}

const s3 = () => ({ ...process.env, ...s3Env(proxy.endpoint) });
const cfgGets = (volume: string) => lister.requests.filter((r) => r.startsWith('GET ') && r.includes(`/${volume}/`) && r.endsWith('.cfg'));

/** Every backup of `volumes` read through the mount equals the builder's restore, byte for byte. */
async function expectBackups(mp: string, volumes: string[]): Promise<void> {
  for (const v of volumes) {
    const dir = path.join(mp, 'volumes', v, 'backups');
    expect((await fs.promises.readdir(dir)).sort(), v).toEqual([...expected.get(v)!.keys()].map((b) => `${b}.img`).sort());
    for (const [b, img] of expected.get(v)!) {
      const got = await fs.promises.readFile(path.join(dir, `${b}.img`));
      expect(got.equals(img), `${v}/${b}`).toBe(true);
    }
  }
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-lazy-'));
  target = path.join(tmp, 'target');
  const b = new TargetBuilder(target);
  const volumes: [string, number][] = [['vol-a', 3], ['vol-b', 2], ['vol-c', 2], ['vol-d', 3]];
  volumes.forEach(([v, n], i) => {
    b.volume(v, { size: SIZE, compression: i % 2 ? 'gzip' : 'lz4' });
    const images = new Map<string, Buffer>();
    const blocks = new Map<number, Buffer>();
    for (let k = 0; k < n; k++) {
      blocks.set(k * BLOCK, pattern(100 * i + k, BLOCK)); // each backup one block more (an incremental)
      const name = `backup-${v.slice(4)}-${k}`;
      b.backup(v, name, { blocks: new Map(blocks) });
      images.set(name, TargetBuilder.restore(SIZE, blocks));
    }
    expected.set(v, images);
  });
  const bad = path.join(path.dirname(fs.readdirSync(target, { recursive: true }).map(String)
    .map((f) => path.join(target, f)).find((f) => f.endsWith('backup_backup-b-0.cfg'))!), `backup_${DAMAGED.backup}.cfg`);
  fs.writeFileSync(bad, '{"Name": "backup-b-bad", "VolumeName": "vol-b", not json');
  lister = await startListingServer(target, BUCKET);
  proxy = await startProxy(lister.endpoint);
});

afterAll(async () => {
  for (const mp of mounts) {
    await run(CHAINFS, ['umount', mp]);
    spawnSync('fusermount', ['-uz', mp]);
  }
  proxy?.release();
  await proxy?.close();
  await lister?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('a mount of an S3 target lists lazily', () => {
  it('mounting GETs no cfg; volumes/A/backups/ GETs A\'s cfgs only; every backup of A and B reads as restored', async () => {
    lister.requests.length = 0;
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 's3-a', s3());
    expect(lister.requests.filter((r) => r.startsWith('LIST backupstore/volumes/'))).not.toEqual([]); // it did list
    expect(lister.requests.filter((r) => r.startsWith('GET ') && r.includes('backupstore/volumes/'))).toEqual([]);
    expect((await fs.promises.readdir(path.join(mp, 'volumes'))).sort()).toEqual(['vol-a', 'vol-b', 'vol-c', 'vol-d']);
    expect(await fs.promises.readdir(path.join(mp, 'volumes', 'vol-b'))).toEqual(['backups']);
    expect(lister.requests.filter((r) => r.startsWith('GET ') && r.includes('backupstore/volumes/'))).toEqual([]);

    lister.requests.length = 0;
    expect((await fs.promises.readdir(path.join(mp, 'volumes', 'vol-a', 'backups'))).sort())
      .toEqual(['backup-a-0.img', 'backup-a-1.img', 'backup-a-2.img']);
    expect(cfgGets('vol-a').length).toBeGreaterThanOrEqual(4); // volume.cfg and three backup cfgs
    expect(cfgGets('vol-a').some((r) => r.endsWith('/volume.cfg'))).toBe(true);
    for (const v of ['vol-b', 'vol-c', 'vol-d']) expect(cfgGets(v), v).toEqual([]);
    expect(lister.requests.filter((r) => r.startsWith('LIST') && /vol-[bcd]/.test(r))).toEqual([]);

    // Listed once: looking it up again costs nothing.
    lister.requests.length = 0;
    await fs.promises.stat(path.join(mp, 'volumes', 'vol-a', 'backups', 'backup-a-1.img'));
    expect(lister.requests.filter((r) => r.includes('.cfg') || r.startsWith('LIST'))).toEqual([]);

    await expectBackups(mp, ['vol-a', 'vol-b']);
    // B's damaged cfg is left out of the tree, the rest of B is served (above).
    await expect(fs.promises.stat(path.join(mp, 'volumes', 'vol-b', 'backups', `${DAMAGED.backup}.img`))).rejects.toMatchObject({ code: 'ENOENT' });
    await unmount(mp);
  });

  it('catalog.json lists every volume when opened, the damaged backup with its problem', async () => {
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 's3-json', s3());
    lister.requests.length = 0;
    expect((await fs.promises.stat(path.join(mp, 'catalog.json'))).size).toBe(0); // not built by a stat
    expect(lister.requests.filter((r) => r.includes('.cfg'))).toEqual([]);
    const doc = JSON.parse(await fs.promises.readFile(path.join(mp, 'catalog.json'), 'utf8')) as CatalogJson;
    expectCatalogSchema(doc);
    expect(doc.volumes.map((v) => v.name)).toEqual(['vol-a', 'vol-b', 'vol-c', 'vol-d']);
    for (const v of doc.volumes) {
      expect(v.problem, v.name).toBeUndefined();
      const complete = v.backups.filter((b) => b.state === 'complete').map((b) => b.name).sort();
      expect(complete, v.name).toEqual([...expected.get(v.name)!.keys()].sort());
    }
    const bad = doc.volumes.find((v) => v.name === DAMAGED.volume)!.backups.find((b) => b.name === DAMAGED.backup)!;
    expect(bad.state).toBe('unreadable');
    expect(bad.problem).toMatch(/backup_backup-b-bad\.cfg/);
    // Listed for catalog.json: the directories answer from memory now.
    lister.requests.length = 0;
    await expectBackups(mp, ['vol-c', 'vol-d']);
    expect(lister.requests.filter((r) => r.includes('.cfg') || r.startsWith('LIST'))).toEqual([]);
    await unmount(mp);
  });

  it('a listing that fails answers EIO, is logged with the volume and reason, and works on the next access', async () => {
    const { mp, log } = await mount(`s3://${BUCKET}@us-east-1/`, 's3-fail', s3());
    const dir = path.join(mp, 'volumes', 'vol-c', 'backups');
    proxy.fail = /prefix=backupstore\/volumes\/[0-9a-f]{2}\/[0-9a-f]{2}\/vol-c\/backups\//;
    try {
      await expect(fs.promises.readdir(dir)).rejects.toMatchObject({ code: 'EIO' });
      await expect(fs.promises.stat(path.join(dir, 'backup-c-0.img'))).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      proxy.fail = undefined;
    }
    const logged = fs.readFileSync(log, 'utf8');
    expect(logged).toMatch(/error: volumes\/vol-c\/backups: cannot list: .*vol-c\/backups\/.*AccessDenied/);
    await expectBackups(mp, ['vol-c']);
    await unmount(mp);
  });

  it('concurrent ls of one unlisted directory from several processes list it once', async () => {
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 's3-many', s3());
    const dir = path.join(mp, 'volumes', 'vol-d', 'backups');
    lister.requests.length = 0;
    // Hold the volume's first request back, so that the other ls processes come while it is being listed.
    proxy.hold = /vol-d\//;
    const all = Promise.all(Array.from({ length: 6 }, () => run('ls', ['-1', dir])));
    await new Promise((r) => setTimeout(r, 300)); // let them all reach the daemon (no assertion on time)
    proxy.release();
    const outs = await all;
    for (const o of outs) {
      expect(o.code, o.err).toBe(0);
      expect(o.out.trim().split('\n')).toEqual(['backup-d-0.img', 'backup-d-1.img', 'backup-d-2.img']);
    }
    expect(lister.requests.filter((r) => r.startsWith('LIST') && r.includes('/vol-d/backups/'))).toHaveLength(1);
    for (const b of ['volume.cfg', 'backups/backup_backup-d-0.cfg', 'backups/backup_backup-d-2.cfg']) {
      expect(lister.requests.filter((r) => r.startsWith('GET ') && r.endsWith(`/vol-d/${b}`)), b).toHaveLength(1);
    }
    await unmount(mp);
  });
});

describe('a mount of a directory target lists lazily', () => {
  it('every backup reads as restored; concurrent ls of unlisted directories agree; catalog.json is complete', async () => {
    const { mp } = await mount(target, 'dir');
    const lists = await Promise.all(['vol-a', 'vol-b', 'vol-a', 'vol-b', 'vol-d', 'vol-d']
      .map((v) => run('ls', ['-1', path.join(mp, 'volumes', v, 'backups')])));
    for (const o of lists) expect(o.code, o.err).toBe(0);
    expect(lists[0].out).toBe(lists[2].out);
    expect(lists[1].out).toBe(lists[3].out);
    await expectBackups(mp, ['vol-a', 'vol-b', 'vol-c', 'vol-d']);
    const doc = JSON.parse(await fs.promises.readFile(path.join(mp, 'catalog.json'), 'utf8')) as CatalogJson;
    expectCatalogSchema(doc);
    expect(doc.volumes.map((v) => v.backups.length)).toEqual([3, 3, 2, 3]); // vol-b: two and the damaged one
    await unmount(mp);
  });
});

describe('read-ahead of a walker over a lazily listed S3 target', () => {
  /** walk-00 .. walk-15, two backups each: more volumes than read-ahead lists ahead (8, the README's number). */
  const WALK = Array.from({ length: 16 }, (_, i) => `walk-${String(i).padStart(2, '0')}`);
  const walkExpected = new Map<string, Map<string, Buffer>>();
  let walkDir: string;
  let walkLister: ListingServer;
  let walkProxy: Proxy;
  const walkEnv = () => ({ ...process.env, ...s3Env(walkProxy.endpoint) });
  /** The volumes any request so far touched (cfg GETs and LISTs under volumes/XX/YY/<volume>/). */
  const touched = () => new Set(walkLister.requests.map((r) => /\/(walk-\d\d)\//.exec(r)?.[1]).filter((v): v is string => !!v));
  const listedLocks = (v: string) => walkLister.requests.some((r) => r.startsWith('LIST') && r.includes(`/${v}/locks/`));
  /** Waits (no time limit but vitest's) until every volume in `vs` has been listed to its end (its locks/ LIST is the last request). */
  const listedAll = async (vs: string[]) => {
    while (!vs.every(listedLocks)) await new Promise((r) => setTimeout(r, 20));
  };
  const ls = async (mp: string, v: string) => {
    const r = await run('ls', ['-1', path.join(mp, 'volumes', v, 'backups')]);
    expect(r.code, r.err).toBe(0);
    expect(r.out.trim().split('\n'), v).toEqual([...walkExpected.get(v)!.keys()].map((b) => `${b}.img`).sort());
  };

  beforeAll(async () => {
    walkDir = path.join(tmp, 'walk-target');
    const b = new TargetBuilder(walkDir);
    WALK.forEach((v, i) => {
      b.volume(v, { size: 2 * BLOCK, compression: i % 2 ? 'gzip' : 'lz4' });
      const images = new Map<string, Buffer>();
      const blocks = new Map<number, Buffer>();
      for (let k = 0; k < 2; k++) {
        blocks.set(k * BLOCK, pattern(1000 + 10 * i + k, BLOCK));
        b.backup(v, `backup-${i}-${k}`, { blocks: new Map(blocks) });
        images.set(`backup-${i}-${k}`, TargetBuilder.restore(2 * BLOCK, blocks));
      }
      walkExpected.set(v, images);
    });
    walkLister = await startListingServer(walkDir, BUCKET, 1000);
    walkProxy = await startProxy(walkLister.endpoint);
  });

  afterAll(async () => {
    walkProxy?.release();
    await walkProxy?.close();
    await walkLister?.close();
  });

  it('a single ls, or two not next to each other, lists only what was asked for', async () => {
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 'walk-single', walkEnv());
    walkLister.requests.length = 0;
    await ls(mp, 'walk-00');
    expect([...touched()]).toEqual(['walk-00']);
    // The exact cost of one volume: volume.cfg, backups/ LIST, a ranged GET per backup cfg, locks/ LIST.
    expect(walkLister.requests.filter((r) => r.includes('/walk-00/')).map((r) => r.replace(/volumes\/..\/..\//, '')).sort()).toEqual([
      'GET backupstore/walk-00/backups/backup_backup-0-0.cfg', 'GET backupstore/walk-00/backups/backup_backup-0-1.cfg',
      'GET backupstore/walk-00/volume.cfg', 'LIST backupstore/walk-00/backups/|/', 'LIST backupstore/walk-00/locks/|/',
    ].sort());
    // walk-05 is listed in several requests one after another: any read-ahead that walk-00 had started would be on its way by then.
    await ls(mp, 'walk-05');
    expect([...touched()].sort()).toEqual(['walk-00', 'walk-05']);
    await unmount(mp);
  });

  it('the second of two neighbours starts read-ahead of the next 8, no further; a read-ahead that fails is dropped', async () => {
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 'walk-bound', walkEnv());
    walkLister.requests.length = 0;
    walkProxy.fail = /prefix=backupstore\/volumes\/[0-9a-f]{2}\/[0-9a-f]{2}\/walk-03\/backups\//; // walk-03's listing fails, in the background
    try {
      await ls(mp, 'walk-01');
      await ls(mp, 'walk-02');
      await listedAll(['walk-04', 'walk-05', 'walk-06', 'walk-07', 'walk-08', 'walk-09', 'walk-10']);
    } finally {
      walkProxy.fail = undefined;
    }
    // Listed ahead: 03 (its LIST failed) to 10; nothing past 02 + 8.
    expect([...touched()].filter((v) => v !== 'walk-03').sort())
      .toEqual(['walk-01', 'walk-02', 'walk-04', 'walk-05', 'walk-06', 'walk-07', 'walk-08', 'walk-09', 'walk-10']);
    // The failed one is listed again for its reader, and answers.
    await ls(mp, 'walk-03');
    expect(walkLister.requests.filter((r) => r.startsWith('LIST') && r.includes('/walk-03/backups/'))).toHaveLength(1);
    // walk-04 came from read-ahead: its ls costs no request (and moves the window on by one: walk-12, not 13).
    await listedAll(['walk-11']);
    const before = walkLister.requests.length;
    await ls(mp, 'walk-04');
    expect(walkLister.requests.slice(before).filter((r) => r.includes('/walk-04/'))).toEqual([]);
    await listedAll(['walk-12']);
    expect([...touched()].filter((v) => v > 'walk-12')).toEqual([]);
    await unmount(mp);
  });

  it('find over the mount lists every backup once and each reads as the builder restored it', async () => {
    const { mp } = await mount(`s3://${BUCKET}@us-east-1/`, 'walk-find', walkEnv());
    walkLister.requests.length = 0;
    const r = await run('find', [mp]);
    expect(r.code, r.err).toBe(0);
    const found = r.out.trim().split('\n').filter((f) => f.endsWith('.img')).map((f) => path.relative(mp, f)).sort();
    const want = WALK.flatMap((v) => [...walkExpected.get(v)!.keys()].map((b) => `volumes/${v}/backups/${b}.img`)).sort();
    expect(found).toEqual(want);
    // Read-ahead and the walker shared their listings: one backups/ LIST per volume.
    for (const v of WALK) expect(walkLister.requests.filter((q) => q.startsWith('LIST') && q.includes(`/${v}/backups/`)), v).toHaveLength(1);
    for (const v of WALK) {
      for (const [b, img] of walkExpected.get(v)!) {
        const got = await fs.promises.readFile(path.join(mp, 'volumes', v, 'backups', `${b}.img`));
        expect(got.equals(img), `${v}/${b}`).toBe(true);
      }
    }
    await unmount(mp);
  });
});

describe('a target with no volume Longhorn would list', () => {
  it('mounts with an empty volumes/ directory (not ENOENT), and says which names it skipped', async () => {
    const empty = path.join(tmp, 'target-skipped');
    // A name Longhorn's rule refuses (upper case), under its right hash directories or not: skipped either way.
    const bad = path.join(empty, 'backupstore', 'volumes', 'ab', 'cd', 'Not_A_Volume');
    fs.mkdirSync(bad, { recursive: true });
    fs.writeFileSync(path.join(bad, 'volume.cfg'), '{}');
    const { mp, log } = await mount(empty, 'mnt-skipped');
    expect(await fs.promises.readdir(path.join(mp, 'volumes'))).toEqual([]);
    expect((await fs.promises.readdir(mp)).sort()).toContain('volumes');
    await unmount(mp);
    expect(fs.readFileSync(log, 'utf8')).toContain('Not_A_Volume');
  });
});

// --- catalog.json against its schema in docs/json.md -------------------------

interface CatalogJson {
  volumes: { name: string; problem?: string; backups: { name: string; state: string; problem?: string }[] }[];
}

type Schema = { type?: string | string[]; properties?: Record<string, Schema>; required?: string[]; items?: Schema; enum?: unknown[] };

/** The keywords the schema uses (type, required, properties, items, enum); the full validator is test/operator-json.test.ts's. */
function violations(v: unknown, s: Schema, at = '$'): string[] {
  const t = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' && Number.isInteger(v) ? 'integer' : typeof v;
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  if (types.length && !types.includes(t) && !(t === 'integer' && types.includes('number'))) return [`${at}: ${t}`];
  const errs: string[] = [];
  if (s.enum && !s.enum.includes(v)) errs.push(`${at}: ${JSON.stringify(v)}`);
  if (Array.isArray(v) && s.items) v.forEach((x, i) => errs.push(...violations(x, s.items!, `${at}[${i}]`)));
  if (t === 'object') {
    for (const k of s.required ?? []) if (!(k in (v as object))) errs.push(`${at}: missing ${k}`);
    for (const [k, x] of Object.entries(v as object)) if (s.properties?.[k]) errs.push(...violations(x, s.properties[k], `${at}.${k}`));
  }
  return errs;
}

function expectCatalogSchema(doc: unknown): void {
  const md = fs.readFileSync(path.join(__dirname, '..', 'docs', 'json.md'), 'utf8');
  const m = /<!-- schema: catalog-backupstore -->\n```json\n([\s\S]*?)\n```/.exec(md);
  expect(m, 'docs/json.md has the catalog-backupstore schema').not.toBeNull();
  expect(violations(doc, JSON.parse(m![1]) as Schema)).toEqual([]);
  expect(violations({ volumes: [{ name: 1 }] }, JSON.parse(m![1]) as Schema)).not.toEqual([]); // not a rubber stamp
}
