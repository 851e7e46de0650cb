/**
 * `export`: a view of a replica written as a standalone image (raw or
 * qcow2), optionally with its SHA-512 and in Longhorn's backing-image
 * directory layout. This is the main-thread half: it checks everything that
 * can be checked before writing (the view opens, OUT is new and outside the
 * source, the replica is not live, the space is there), creates the
 * temporary output, runs the copy (job.ts) on the view it checked, and
 * commits only a complete, flushed result whose source did not change
 * meanwhile.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, UsageError } from '../errors';
import { isDirectory } from '../files';
import type { Catalog, OpenedView, SourceOptions, ViewSelector } from '../source/catalog';
import { namedView } from '../source/named';
import type { QcowBacking } from './qcow2-writer';
import { openSource } from '../source/open';
import { Sha512Worker } from './checksum';
import { runJob, type ExportFormat, type JobProgress } from './job';
import { BACKING_CFG, BACKING_FILE, BACKING_MODE, encodeBackingCfg, goTimeString, parseBackingImageDir, withUuidSuffix } from './longhorn-layout';
import { AtomicOutput, planOutput, removeStaleTemporaries, sourcePlaces, writeFailed, type OutputPlan } from './output';
import { DEFAULT_CLUSTER_SIZE } from './qcow2-writer';
import { checkFreeSpace, estimateAllocation } from './space';

export type { ExportFormat } from './job';
export type ExportLayout = 'file' | 'longhorn';

export interface ExportRequest {
  /** The sources (a replica directory, data roots, a backup target, a v2 disk), as the user named them. */
  sources: string[];
  sourceOptions: SourceOptions;
  /** Which view of the sources (default: the head, or the picked replica's head). */
  selector: ViewSelector;
  /** A file, or for the Longhorn layout a directory `<name>-<uuid>`. */
  out: string;
  format: ExportFormat;
  layout: ExportLayout;
  /** qcow2 only; default 64 KiB. */
  clusterSize?: number;
  /** qcow2 only. */
  compress?: boolean;
  /** Replace an existing OUT. */
  overwrite?: boolean;
  /** Read a Rebuilding replica, export a live head, accept a head that changed meanwhile. */
  force?: boolean;
  /** Compute the SHA-512 of the output (default: on for the Longhorn layout). */
  checksum?: boolean;
  /**
   * Only what changed since this older view (a snapshot; a backup on a
   * backup target): a qcow2 overlay over `backing`, or without it a sparse
   * raw file with only the changed ranges allocated.
   */
  since?: string;
  /** The overlay's backing file: an earlier full export of `since` (checked by size and sampled blocks). */
  backing?: string;
}

export interface ExportHooks {
  warn(message: string): void;
  progress?(p: JobProgress): void;
  /** A signal is about to end the process; the temporary output is already gone. */
  interrupted?(signal: NodeJS.Signals): void;
}

export interface ExportSummary {
  /** OUT as written (absolute): inside a directory given as OUT, the derived name; with a uuid added for the Longhorn layout. */
  out: string;
  /** The image file written (absolute). */
  path: string;
  format: ExportFormat;
  layout: ExportLayout;
  /** The image file's size (for qcow2, the container's). */
  size: number;
  virtualSize: number;
  /** st_blocks * 512 of the image file. */
  allocatedBytes: number;
  sha512: string | null;
  seconds: number;
  /** The view exported: its path in the source's catalog (as the mount shows it). */
  view: string;
  /** The view's short name (`pvc-1`, `pvc-1-before-upgrade`). */
  name: string;
  /** The Longhorn layout's backing.cfg content, if written. */
  backingCfg: string | null;
}

const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143 };

export async function exportImage(req: ExportRequest, hooks: ExportHooks): Promise<ExportSummary> {
  const started = process.hrtime.bigint();
  const checksum = req.checksum ?? req.layout === 'longhorn';
  const clusterSize = req.format === 'qcow2' ? req.clusterSize ?? DEFAULT_CLUSTER_SIZE : undefined;
  if (req.layout === 'longhorn' && !isDirectory(req.out)) parseBackingImageDir(req.out); // a name Longhorn refuses fails before anything is opened
  // The hash worker starts now: its start-up overlaps the checks.
  const hash = checksum ? new Sha512Worker() : undefined;
  let pre: Prepared | undefined;
  try {
    pre = await prepare(req, hooks);
    return await exportPrepared(req, pre, hooks, hash, clusterSize, started);
  } finally {
    await hash?.close();
    pre?.view.close();
    pre?.catalog.close();
  }
}

async function exportPrepared(req: ExportRequest, pre: Prepared, hooks: ExportHooks, hash: Sha512Worker | undefined,
  clusterSize: number | undefined, started: bigint): Promise<ExportSummary> {
  req = { ...req, out: pre.out };
  const bi = req.layout === 'longhorn' ? parseBackingImageDir(req.out) : undefined;
  if (!req.compress) checkFreeSpace(pre.plan.dir, estimateOutputBytes(pre, clusterSize), req.out);

  for (const p of removeStaleTemporaries(pre.plan)) hooks.warn(`removed ${p}, the partial output of an export that was killed`);
  const output = AtomicOutput.create(pre.plan, BACKING_FILE);
  const onSignal = (signal: NodeJS.Signals) => {
    output.abort();
    hooks.interrupted?.(signal);
    process.exit(SIGNAL_EXIT[signal] ?? 1);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await runJob({
      format: req.format, clusterSize, compress: req.compress ?? false, checksum: !!hash,
      fd: output.fd, imagePath: output.imageTmpPath, out: req.out, dataBytes: pre.dataBytes,
      since: pre.since, backing: pre.backing,
    }, pre.catalog, pre.view, hash, (p) => hooks.progress?.(p));
    output.sync();
    checkUnchanged(pre, req, hooks);
    const st = fs.statSync(output.imageTmpPath, { bigint: true });
    let cfg: string | null = null;
    if (bi) {
      cfg = encodeBackingCfg({
        name: bi.containerPath, uuid: bi.uuid, size: Number(st.size), virtualSize: pre.virtualSize,
        realSize: Number(st.blocks) * 512, expectedChecksum: '', currentChecksum: result.sha512 ?? '',
        modificationTime: goTimeString(st.mtimeNs),
      });
      output.writeSidecar(BACKING_CFG, cfg);
      fs.chmodSync(output.imageTmpPath, BACKING_MODE); // a mode change keeps the mtime backing.cfg records
    }
    output.commit();
    return {
      out: output.plan.path, path: output.imagePath, format: req.format, layout: req.layout, size: Number(st.size),
      virtualSize: pre.virtualSize, allocatedBytes: Number(st.blocks) * 512, sha512: result.sha512,
      seconds: Number(process.hrtime.bigint() - started) / 1e9, view: pre.viewPath, name: pre.name, backingCfg: cfg,
    };
  } catch (e) {
    output.abort();
    throw e instanceof ChainfsError || !(e as NodeJS.ErrnoException)?.syscall ? e : writeFailed(req.out, e);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** What is known before the first write, and the view it was learnt from (open: the copy reads it). */
interface Prepared {
  catalog: Catalog;
  view: OpenedView;
  /** OUT as it will be written (see resolveOut). */
  out: string;
  plan: OutputPlan;
  virtualSize: number;
  dataBytes: number;
  /** qcow2 allocation bound, per cluster size asked (computed with the data bytes). */
  qcow2Bytes: number;
  /** The view's local files and their identity before the export. */
  stamps: Map<string, string>;
  viewPath: string;
  name: string;
  /** A head a running engine may write (its change is then a live head's, not a snapshot's). */
  live: boolean;
  /** The source as named, for messages. */
  label: string;
  /** With --since: the older view's selector, and the overlay's backing file as its header records it. */
  since?: ViewSelector;
  backing?: QcowBacking;
}

async function prepare(req: ExportRequest, hooks: ExportHooks): Promise<Prepared> {
  const catalog = await openSource(req.sources, req.sourceOptions);
  let view: OpenedView | undefined;
  try {
    for (const w of catalog.warnings) hooks.warn(w);
    const entry = catalog.select(req.selector);
    view = await entry.open({});
    // Identity of the files as opened: any change from here to the commit is a change during the export.
    const stamps = stampFiles(view.files);
    for (const w of view.warnings) hooks.warn(w);
    const out = resolveOut(req, entry.name, hooks);
    const plan = planOutput(out, req.layout === 'longhorn' ? 'dir' : 'file', req.overwrite ?? false,
      [...view.roots, ...sourcePlaces(req.sources)], view.files);
    view.checkNotLive?.(req.force ?? false, hooks.warn);
    // The one resolution of the view's map: the copy finds these runs in the chain's cache.
    const est = estimateAllocation(view.chain, req.format === 'qcow2' ? req.clusterSize ?? DEFAULT_CLUSTER_SIZE : undefined);
    const delta = req.since === undefined ? {} : await prepareDelta(req, catalog, out);
    return {
      catalog, view, out, plan, virtualSize: view.chain.size, dataBytes: est.dataBytes, qcow2Bytes: est.outputBytes,
      stamps, viewPath: entry.path, name: entry.name, live: !!view.checkNotLive, label: catalog.label,
      ...delta,
    };
  } catch (e) {
    view?.close();
    catalog.close();
    throw e;
  }
}

/**
 * --since A [--backing BASE]: A must open, and BASE (for a qcow2 overlay)
 * must be view A, by size and sampled blocks.
 */
async function prepareDelta(req: ExportRequest, catalog: Catalog, out: string): Promise<{ since: ViewSelector; backing?: QcowBacking }> {
  if (req.format === 'qcow2' && req.backing === undefined) {
    throw new UsageError(undefined, '--since with --format qcow2 needs --backing BASE (an earlier full export of the --since view), which the overlay reads its other clusters from');
  }
  if (req.format === 'raw' && req.backing !== undefined) {
    throw new UsageError(undefined, '--backing goes with --format qcow2 (an overlay); a raw --since export is a sparse file of the changed ranges only');
  }
  if (req.layout === 'longhorn' || req.compress) {
    throw new ChainfsError(undefined, '--since makes an overlay or a delta: not with --layout longhorn or --compress');
  }
  const since = namedView(catalog, req.selector, req.since);
  const older = catalog.select(since);
  const a = await older.open({});
  try {
    if (!req.backing) return { since };
    const { checkBase } = await import('./base-check'); // only --backing needs the qcow2 reader
    return { since, backing: await checkBase(req.backing, out, a.chain, older.path) };
  } finally {
    a.close();
  }
}

/**
 * OUT as it will be written, following cp: an existing directory given as
 * OUT receives `<view name>.<format>` (the Longhorn layout: a new
 * `<view name>-<uuid>` directory in it, unless the directory is itself a
 * backing image directory, which --overwrite replaces). A Longhorn-layout
 * name without Longhorn's `-<8 hex>` suffix gets one, so the directory name
 * and backing.cfg's uuid agree.
 */
function resolveOut(req: ExportRequest, viewName: string, hooks: ExportHooks): string {
  let out = req.out;
  if (isDirectory(out) && !(req.layout === 'longhorn' && isBackingImageDir(out))) {
    out = path.join(out, req.layout === 'longhorn' ? viewName : `${viewName}.${req.format}`);
  }
  if (req.layout !== 'longhorn') return out;
  const named = withUuidSuffix(out);
  if (named !== out && out === req.out) {
    hooks.warn(`${req.out}: the name has no -<8-hex uuid> suffix; writing ${named} ` +
      '(Longhorn names backing image directories <name>-<uuid>, and backing.cfg says the same uuid)');
  }
  return named;
}

/** A directory named `<name>-<8 hex>` or holding our two files: OUT itself, not a parent for it. */
function isBackingImageDir(p: string): boolean {
  if (withUuidSuffix(p) === p) return true;
  try {
    return fs.readdirSync(p).some((n) => n === BACKING_FILE || n === BACKING_CFG);
  } catch {
    return false;
  }
}

function estimateOutputBytes(pre: Prepared, clusterSize: number | undefined): number {
  return clusterSize ? pre.qcow2Bytes : pre.dataBytes;
}

/** Identity of each local file of the view: inode, size, mtime, ctime (ns). A snapshot taken meanwhile removes the head's name. */
function stampFiles(files: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of files) m.set(f, stamp(f));
  return m;
}

function stamp(p: string): string {
  try {
    const st = fs.statSync(p, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (e) {
    return `gone (${(e as NodeJS.ErrnoException).code})`;
  }
}

function checkUnchanged(pre: Prepared, req: ExportRequest, hooks: ExportHooks): void {
  const changed = [...pre.stamps].filter(([p, s]) => stamp(p) !== s).map(([p]) => p);
  if (changed.length === 0) return;
  const what = changed.map((p) => path.basename(p)).join(', ');
  const isHead = pre.live;
  const hint = isHead ? 'export a snapshot instead (--snapshot NAME), or pass --force to keep the export anyway'
    : 'pass --force to keep the export anyway';
  if (!req.force) {
    throw new ChainfsError(pre.label, `${what} changed during the export (size, mtime or ctime moved): ` +
      `the image may be torn and was not kept; ${hint}`);
  }
  hooks.warn(`${pre.label}: ${what} changed during the export; keeping it because of --force: the image may be inconsistent`);
}

