/**
 * Entry of the export worker thread (started by job.ts runJobInWorker):
 * runs the job and reports progress (at most ten times a second), then the
 * result or the error.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ChainfsError } from '../errors';
import { runJob, type FromJobWorker, type JobProgress, type JobSpec } from './job';

const port = parentPort!;
const post = (m: FromJobWorker) => port.postMessage(m);
const PROGRESS_INTERVAL_MS = 100;

let last = 0;
let lastPhase = '';
function progress(p: JobProgress): void {
  const now = Date.now();
  if (p.phase === lastPhase && now - last < PROGRESS_INTERVAL_MS && p.done < p.total) return;
  last = now;
  lastPhase = p.phase;
  post({ t: 'progress', ...p });
}

runJob(workerData as JobSpec, progress).then(
  (result) => post({ t: 'done', result }),
  (e: unknown) => {
    const err = e as Error & { code?: string };
    post({
      t: 'error',
      chainfs: e instanceof ChainfsError,
      message: err?.message ?? String(e),
      code: typeof err?.code === 'string' ? err.code : 'EIO',
      ...(err?.stack ? { stack: err.stack } : {}),
    });
  },
);
