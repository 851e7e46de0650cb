/**
 * S3 for the backup-target tests, on 127.0.0.1 only:
 * - `startS3rver`: the npm s3rver (a real S3 server: SigV4, GET, ranged
 *   GET, ListObjectsV2), run as its own child process on a free port and
 *   stopped by its pid. Targets are uploaded through the SDK.
 * - `startListingServer`: a tiny S3 over a local directory, written here,
 *   for what s3rver 3.7.1 cannot serve: its delimiter listing drops keys two
 *   or more levels below the prefix (format document, section 3), which is
 *   exactly how Longhorn's volumes/XX/YY/<volume>/ are discovered. It
 *   answers GetObject and ListObjectsV2 (prefix, delimiter, continuation
 *   token) with tiny pages, so pagination is exercised, and counts requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

const ROOT = path.resolve(__dirname, '..', '..');

export interface S3Server {
  endpoint: string;
  pid: number;
  /** Lines s3rver logged (one per request: method, path, status). */
  log: string[];
  stop(): Promise<void>;
}

/**
 * Starts s3rver on 127.0.0.1 with a free port and bucket `bucket`; its data
 * lives in `dataDir`. `script` is s3rver's bin/s3rver.js, for callers
 * compiled elsewhere (the benchmark, under dist/bench).
 */
export async function startS3rver(dataDir: string, bucket: string,
  script = path.join(ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js')): Promise<S3Server> {
  const child: ChildProcess = spawn(process.execPath, [script,
    '-d', dataDir, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', bucket], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('s3rver did not start in 20 s')), 20_000);
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        log.push(l);
        const m = /listening on (127\.0\.0\.1:\d+)/.exec(l);
        if (m) {
          clearTimeout(timer);
          resolve(`http://${m[1]}`);
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`s3rver exited ${code}`)));
  });
  return {
    endpoint, pid: child.pid!, log,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      process.kill(child.pid!, 'SIGTERM');
    }),
  };
}

/** s3rver's fixed credentials; the environment the product reads (Longhorn's secret's variable names). */
export function s3Env(endpoint: string): Record<string, string> {
  return { AWS_ENDPOINTS: endpoint, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
}

/** Uploads every file under `dir` as `<prefix><relative path>` through the SDK. */
export async function uploadDir(endpoint: string, bucket: string, dir: string, prefix = ''): Promise<number> {
  const client = new S3Client({
    endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
  const files = fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile());
  try {
    for (const f of files) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: prefix + f.split(path.sep).join('/'), Body: fs.readFileSync(path.join(dir, f)) }));
    }
  } finally {
    client.destroy();
  }
  return files.length;
}

export interface ListingServer {
  endpoint: string;
  /** Requests seen: `GET key` or `LIST prefix|delimiter`. */
  requests: string[];
  close(): Promise<void>;
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * A minimal S3 (path-style, any credentials) serving bucket `bucket` from
 * `dir`: GetObject and ListObjectsV2 with at most `pageSize` entries a page;
 * `delayMs(key)` holds a GET back (a slow object).
 */
export async function startListingServer(dir: string, bucket: string, pageSize = 3,
  delayMs: (key: string) => number = () => 0): Promise<ListingServer> {
  const requests: string[] = [];
  const allKeys = () => fs.readdirSync(dir, { recursive: true }).map(String)
    .filter((f) => fs.statSync(path.join(dir, f)).isFile()).map((f) => f.split(path.sep).join('/')).sort();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (parts[0] !== bucket || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'application/xml' }).end('<Error><Code>NoSuchBucket</Code></Error>');
      return;
    }
    const key = parts.slice(1).join('/');
    if (key === '' && url.searchParams.get('list-type') === '2') {
      const prefix = url.searchParams.get('prefix') ?? '';
      const delimiter = url.searchParams.get('delimiter') ?? '';
      requests.push(`LIST ${prefix}|${delimiter}`);
      const entries: { key?: string; prefix?: string }[] = [];
      const seen = new Set<string>();
      for (const k of allKeys()) {
        if (!k.startsWith(prefix)) continue;
        const rest = k.slice(prefix.length);
        const d = delimiter ? rest.indexOf(delimiter) : -1;
        if (d >= 0) {
          const p = prefix + rest.slice(0, d + delimiter.length);
          if (!seen.has(p)) {
            seen.add(p);
            entries.push({ prefix: p });
          }
        } else entries.push({ key: k });
      }
      const start = Number(url.searchParams.get('continuation-token') ?? '0');
      const page = entries.slice(start, start + pageSize);
      const truncated = start + pageSize < entries.length;
      const body = `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>${bucket}</Name><Prefix>${xml(prefix)}</Prefix>`
        + `<KeyCount>${page.length}</KeyCount><MaxKeys>${pageSize}</MaxKeys><IsTruncated>${truncated}</IsTruncated>`
        + (truncated ? `<NextContinuationToken>${start + pageSize}</NextContinuationToken>` : '')
        + page.map((e) => (e.key
          ? `<Contents><Key>${xml(e.key)}</Key><LastModified>${fs.statSync(path.join(dir, e.key)).mtime.toISOString()}</LastModified><Size>${fs.statSync(path.join(dir, e.key)).size}</Size></Contents>`
          : `<CommonPrefixes><Prefix>${xml(e.prefix!)}</Prefix></CommonPrefixes>`)).join('')
        + '</ListBucketResult>';
      res.writeHead(200, { 'content-type': 'application/xml' }).end(body);
      return;
    }
    requests.push(`GET ${key}`);
    const file = path.join(dir, ...key.split('/'));
    if (!key || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'application/xml' }).end(`<Error><Code>NoSuchKey</Code><Key>${xml(key)}</Key></Error>`);
      return;
    }
    const data = fs.readFileSync(file);
    const delay = delayMs(key);
    if (delay > 0) {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length }).end(data), delay);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length }).end(data);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
