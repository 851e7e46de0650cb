/**
 * Backup targets on S3, all on 127.0.0.1:
 * - a real S3 server (npm s3rver, its own child process, stopped by pid),
 *   filled through the SDK with the engine-written target and the builder's
 *   sample; read through s3:// backup URLs (which name the volume, so no
 *   multi-level delimiter listing is needed);
 * - the in-test listing server (helpers/backupstore-s3.ts) for what s3rver
 *   3.7.1 cannot serve (delimiter listing two levels deep, format document
 *   section 3): discovering every volume of a bucket, with 3-entry pages so
 *   pagination runs, and counting requests.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyTarget } from '../src/source/backupstore/verify';
import { buildSampleTarget, type SampleTarget } from './helpers/backupstore-builder';
import { extractFixture, fixtureManifest, open, readView, sha256 } from './helpers/backupstore-read';
import { CHAINFS } from './helpers/cli';
import { s3Env, startListingServer, startS3rver, uploadDir, type ListingServer, type S3Server } from './helpers/backupstore-s3';

const BUCKET = 'lh-backups';
let tmp: string;
let sample: SampleTarget;
let gt: string;
let s3: S3Server;
let lister: ListingServer;
const savedEnv = { ...process.env };

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-s3-'));
  sample = buildSampleTarget(path.join(tmp, 'sample'));
  gt = extractFixture(fs.mkdtempSync(path.join(tmp, 'gt-')));
  s3 = await startS3rver(path.join(tmp, 's3rver-data'), BUCKET);
  await uploadDir(s3.endpoint, BUCKET, gt, 'gt/');
  await uploadDir(s3.endpoint, BUCKET, sample.dir, 'sample/');
  lister = await startListingServer(sample.dir, BUCKET);
});

afterAll(async () => {
  process.env = savedEnv;
  await s3?.stop();
  await lister?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function useEndpoint(endpoint: string): void {
  Object.assign(process.env, s3Env(endpoint));
}

describe('s3rver (a real S3 server)', () => {
  it('every live backup of the engine-written target equals the manifest through s3:// backup URLs', async () => {
    useEndpoint(s3.endpoint);
    for (const b of fixtureManifest().backups.filter((x) => x.status === 'live')) {
      const cat = await open(`s3://${BUCKET}@us-east-1/gt/?backup=${b.name}&volume=vol-lz4`);
      try {
        expect((await readView(cat, cat.select({}).path)).sha256, b.name).toBe(b.sha256);
      } finally {
        cat.close();
      }
    }
  });

  it('every view of the sample target, a volume URL at a time, and its backing image', async () => {
    useEndpoint(s3.endpoint);
    const seen = new Set<string>();
    for (const vol of ['vol-gzip', 'vol-lz4', 'vol-none']) {
      const cat = await open(`s3://${BUCKET}@us-east-1/sample?volume=${vol}`);
      try {
        for (const v of cat.views().filter((x) => !x.problem)) {
          expect((await readView(cat, v.path)).sha256, v.path).toBe(sha256(sample.expected.get(v.path)!));
          seen.add(v.path);
        }
      } finally {
        cat.close();
      }
    }
    expect([...seen].sort()).toEqual([...sample.expected.keys()].sort());
  });

  it('verify through S3 counts the garbage with a flat listing (which s3rver serves right)', async () => {
    useEndpoint(s3.endpoint);
    const cat = await open(`s3://${BUCKET}@us-east-1/sample/?volume=vol-gzip`);
    try {
      const r = await verifyTarget(cat, {});
      expect(r.damaged).toBe(false);
      expect(r.unreferencedBlocks).toBe(sample.orphans);
    } finally {
      cat.close();
    }
  });

  it('a volume that is not there is a one-line error naming it', async () => {
    useEndpoint(s3.endpoint);
    await expect(open(`s3://${BUCKET}@us-east-1/gt/?volume=nope`)).rejects.toThrow(/no volume nope in the backup target/);
  });
});

describe('in-test listing server (what s3rver cannot list)', () => {
  it('discovers every volume of the bucket through paginated delimiter listings and reads every view', async () => {
    useEndpoint(lister.endpoint);
    lister.requests.length = 0;
    const cat = await open(`s3://${BUCKET}@us-east-1/`);
    try {
      expect(cat.views().filter((v) => !v.problem).map((v) => v.path).sort()).toEqual([...sample.expected.keys()].sort());
      expect(cat.views().find((v) => v.path.endsWith('g-running.img'))?.problem).toMatch(/in progress/);
      expect(lister.requests.some((r) => r.startsWith('LIST backupstore/volumes/|/'))).toBe(true);
      for (const [p, img] of sample.expected) expect((await readView(cat, p)).sha256, p).toBe(sha256(img));
    } finally {
      cat.close();
    }
  });

  it('a random 4 KiB read costs exactly one GET; reading it again costs none', async () => {
    useEndpoint(lister.endpoint);
    const cat = await open(`s3://${BUCKET}@us-east-1/?backup=l-after-expand&volume=vol-lz4`);
    try {
      const opened = await cat.select({}).open({});
      lister.requests.length = 0;
      const buf = Buffer.alloc(4096);
      await opened.chain.readAsync(buf, 0, 4096, 6 * (2 << 20) + 123 * 4096);
      expect(lister.requests.filter((r) => r.startsWith('GET'))).toHaveLength(1);
      expect(buf.equals(sample.expected.get('volumes/vol-lz4/backups/l-after-expand.img')!.subarray(6 * (2 << 20) + 123 * 4096, 6 * (2 << 20) + 124 * 4096))).toBe(true);
      await opened.chain.readAsync(buf, 0, 4096, 6 * (2 << 20));
      expect(opened.chain.readNoWait(buf, 0, 4096, 6 * (2 << 20) + 8192)).toBe(true);
      expect(lister.requests.filter((r) => r.startsWith('GET'))).toHaveLength(1);
      opened.close();
    } finally {
      cat.close();
    }
  });
  it('a block whose body is cut off mid-transfer fails the read in one line naming it, with no hang', async () => {
    // Between the CLI and the listing server: a .blk answer keeps its Content-Length, sends half, and drops the connection.
    const up = new URL(lister.endpoint);
    const cutter = http.createServer((req, res) => {
      const out = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        if (!decodeURIComponent(req.url ?? '').includes('.blk')) {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(r.statusCode ?? 502, r.headers);
          res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
        });
      });
      out.on('error', () => res.destroy());
      req.pipe(out);
    });
    await new Promise<void>((r) => cutter.listen(0, '127.0.0.1', r));
    try {
      const env = { ...process.env, ...s3Env(`http://127.0.0.1:${(cutter.address() as AddressInfo).port}`) };
      const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
        const c = spawn(CHAINFS, ['cat', `s3://${BUCKET}@us-east-1/?backup=l-after-expand&volume=vol-lz4`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.on('close', (code) => resolve({ code, err }));
      });
      expect(r.code).not.toBe(0);
      expect(r.err.trim().split('\n'), r.err).toHaveLength(1);
      expect(r.err).toMatch(/\.blk.*(closed|aborted|ended)/);
      expect(r.err).not.toMatch(/\n\s+at /);
    } finally {
      cutter.closeAllConnections();
      await new Promise((r) => cutter.close(r));
    }
  });

  it('an endpoint that accepts connections and never answers (a hung proxy): one line after 30 s of silence, no hang', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => { sockets.push(s); }); // reads nothing, answers nothing
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      // one attempt: the SDK would otherwise retry twice more, 30 s of silence each
      const env = { ...process.env, ...s3Env(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`), AWS_MAX_ATTEMPTS: '1' };
      const r = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>((resolve) => {
        const c = spawn(CHAINFS, ['inspect', `s3://${BUCKET}@us-east-1/`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
        const guard = setTimeout(() => c.kill('SIGKILL'), 75_000); // the hang this test is about
        let err = '';
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.on('close', (code, signal) => { clearTimeout(guard); resolve({ code, signal, err }); });
      });
      expect(r.signal, 'still waiting after 75 s').toBeNull();
      expect(r.code).toBe(1);
      expect(r.err.trim().split('\n'), r.err).toHaveLength(1);
      expect(r.err).toMatch(new RegExp(`^chainfs: s3://${BUCKET}/backupstore/volumes/: cannot list: TimeoutError: .*30000 ms`));
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  }, 100_000);
});
