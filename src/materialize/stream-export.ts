/**
 * `export SRC - --format qcow2` and `export SRC - --since A`: a qcow2
 * (whole, or an overlay of what changed since A) or a raw delta, written to
 * stdout in one pass. A raw delta on a pipe cannot keep holes: it is the
 * changed ranges as a raw image with zeros between them, useful through a
 * pipe only to a tool that makes holes again; a file keeps them (export to
 * a file).
 */
import * as path from 'node:path';
import { ChainfsError } from '../errors';
import type { Catalog, CatalogView, OpenedView, ViewSelector } from '../source/catalog';
import { namedView } from '../source/named';
import { checkBase } from './base-check';
import { restrictTo } from './overlay';
import { streamQcow2 } from './qcow2-stream';

export interface StreamDeltaOptions {
  since?: string;
  backing?: string;
  clusterSize?: number;
  selector: ViewSelector;
  progress?: (done: number, total: number) => void;
}

/** Writes to stdout; a reader that goes away ends the process with 141, as SIGPIPE would. */
export async function streamDelta(selected: { catalog: Catalog; entry: CatalogView; view: OpenedView }, format: 'raw' | 'qcow2',
  opts: StreamDeltaOptions): Promise<void> {
  const chain = selected.view.chain;
  let src = chain as Parameters<typeof streamQcow2>[0];
  let backing;
  if (opts.since !== undefined) {
    if (format === 'qcow2' && opts.backing === undefined) {
      throw new ChainfsError(undefined, '--since with --format qcow2 needs --backing BASE (an earlier full export of the --since view)');
    }
    const older = selected.catalog.select(namedView(selected.catalog, opts.selector, opts.since));
    const a = await older.open({});
    try {
      if (opts.backing !== undefined) backing = await checkBase(opts.backing, path.join(process.cwd(), '-'), a.chain, older.path);
      const { changedRanges } = await import('../chain/diff');
      src = restrictTo(chain, (await changedRanges(a.chain, chain)).ranges, format === 'qcow2' ? opts.clusterSize ?? 65536 : 4096);
    } finally {
      a.close();
    }
  }
  // A reader that goes away (| head, a dying ssh): the write callback gets
  // EPIPE; the stream's 'error' event must be taken too, or Node throws it.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(141);
  });
  const sink = (buf: Buffer) => new Promise<void>((resolve, reject) => {
    process.stdout.write(buf, (err) => (err ? reject(err) : resolve()));
  });
  try {
    if (format === 'qcow2') {
      await streamQcow2(src, sink, { clusterSize: opts.clusterSize, backing, onProgress: (d) => opts.progress?.(d, chain.size) });
    } else {
      await streamRaw(src, sink, (d) => opts.progress?.(d, chain.size));
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EPIPE') process.exit(141);
    if ((e as NodeJS.ErrnoException).syscall) throw new ChainfsError('stdout', `write failed: ${(e as Error).message}`);
    throw e;
  }
}

/** Every byte of a (restricted) view: its data runs read, the rest zeros. */
async function streamRaw(src: Parameters<typeof streamQcow2>[0], sink: (b: Buffer) => Promise<void>, progress: (d: number) => void): Promise<void> {
  const STEP = 8 << 20;
  for (let pos = 0; pos < src.size; pos += STEP) {
    const n = Math.min(STEP, src.size - pos);
    const buf = Buffer.alloc(n);
    for (const r of src.runs(pos, n)) if (r.layer) await src.readAsync(buf, r.offset - pos, r.length, r.offset);
    await sink(buf);
    progress(pos + n);
  }
}
