/**
 * What a training run is judged by: held-out accuracy, per-class precision and recall, the confusion
 * matrix, accuracy per stage, and loss/accuracy per epoch. Written as `report.json` and as
 * `report.html`, one self-contained page (an inline SVG plot, no scripts) that opens anywhere.
 */
export interface ClassMetrics {
  label: string;
  precision: number;
  recall: number;
  support: number;
}

export interface Evaluation {
  accuracy: number;
  perClass: ClassMetrics[];
  /** confusion[true][predicted] = images. */
  confusion: number[][];
}

export function evaluate(labels: readonly string[], truth: readonly number[], predicted: readonly number[]): Evaluation {
  const k = labels.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (const [i, t] of truth.entries()) confusion[t][predicted[i]]++;
  const perClass = labels.map((label, c) => {
    const tp = confusion[c][c];
    const predictedC = confusion.reduce((s, row) => s + row[c], 0);
    const support = confusion[c].reduce((a, b) => a + b, 0);
    return { label, precision: predictedC ? tp / predictedC : 0, recall: support ? tp / support : 0, support };
  });
  const correct = labels.reduce((s, _, c) => s + confusion[c][c], 0);
  return { accuracy: truth.length ? correct / truth.length : 0, perClass, confusion };
}

export const argmax = (p: ArrayLike<number>): number => {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
  return best;
};

/** One point per epoch, in order across phases and stages. */
export interface EpochPoint {
  phase: string;
  stage: number;
  epoch: number;
  loss: number;
  /** Held-out loss, where early stopping scored the epoch. */
  valLoss?: number;
  valAccuracy?: number;
  size: number;
  /** The stage's learning rate in this epoch (after its warmup). */
  learningRate?: number;
}

export interface StageRecord {
  phase: string;
  stage: number;
  size: number;
  randAugment: number;
  mixup: number;
  dropout: number;
  epochs: number;
  valAccuracy: number;
  /** Accuracy on unaugmented training images (the head: on its training features). */
  trainAccuracy?: number;
  /** converged | max-epochs | time-budget | fixed (see StopReason). */
  stop?: string;
  seconds: number;
}

/**
 * Whether the run converged (its last stage stopped because its held-out scores stopped improving;
 * null on a fixed schedule, where nobody checked), said in words, and warnings about the result: held-out
 * accuracy near chance, or far below the training accuracy (overfitting, or held-out images unlike the rest).
 */
export function judge(
  stages: readonly StageRecord[],
  accuracy: number,
  classes: number,
): { converged: boolean | null; convergence: string; alerts: string[] } {
  const last = stages.at(-1);
  const stop = last?.stop ?? 'fixed';
  const converged = stop === 'fixed' ? null : stop === 'converged';
  const convergence =
    converged === null
      ? 'fixed schedule (--epochs): convergence not checked'
      : converged
        ? 'converged'
        : `did not converge: the ${stop === 'time-budget' ? 'time budget ran out (raise --time-budget)' : 'epoch budget ran out (raise --max-epochs)'} while the held-out scores were still improving`;
  const alerts: string[] = [];
  const chance = 1 / classes;
  if (accuracy < chance + 0.25 * (1 - chance))
    alerts.push(
      `held-out accuracy ${pct(accuracy)} is near chance (${pct(chance)}): the model has not learned these labels; more images per label, more epochs, or a pretrained base (--weights) should help`,
    );
  if (last?.trainAccuracy !== undefined && last.trainAccuracy - accuracy > 0.25)
    alerts.push(
      `held-out accuracy ${pct(accuracy)} is far below training accuracy ${pct(last.trainAccuracy)}: the model memorised its training images; more images per label or stronger augmentation (--randaug) should help`,
    );
  return { converged, convergence, alerts };
}

export interface TrainingReport {
  name: string;
  base: string;
  backend: string;
  labels: string[];
  images: { train: number; val: number; skipped: number };
  skipped: { path: string; reason: string }[];
  warnings: string[];
  stages: StageRecord[];
  epochs: EpochPoint[];
  final: Evaluation;
  seconds: number;
  converged: boolean | null;
  convergence: string;
  /** Warnings about the result (near chance, overfitting). */
  alerts: string[];
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

/** Loss (left axis) and held-out accuracy (right axis, 0–1) per epoch, stage boundaries marked. */
function plot(points: readonly EpochPoint[]): string {
  const [w, h, pad] = [720, 260, 40];
  if (!points.length) return '';
  const maxLoss = Math.max(...points.map((p) => p.loss), 1e-6);
  const x = (i: number) => pad + (i * (w - 2 * pad)) / Math.max(1, points.length - 1);
  const yLoss = (v: number) => h - pad - (v / maxLoss) * (h - 2 * pad);
  const yAcc = (v: number) => h - pad - v * (h - 2 * pad);
  const line = (ys: (number | undefined)[], colour: string) => {
    const pts = ys.flatMap((y, i) => (y === undefined ? [] : [`${x(i).toFixed(1)},${y.toFixed(1)}`]));
    return `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.join(' ')}"/>`;
  };
  const bounds = points
    .map((p, i) => (i > 0 && (p.stage !== points[i - 1].stage || p.phase !== points[i - 1].phase) ? i : -1))
    .filter((i) => i > 0)
    .map((i) => `<line x1="${x(i - 0.5)}" x2="${x(i - 0.5)}" y1="${pad}" y2="${h - pad}" stroke="#bbb" stroke-dasharray="4 3"/>`);
  return `<svg role="img" aria-label="training loss and held-out accuracy per epoch" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}">
<rect x="${pad}" y="${pad}" width="${w - 2 * pad}" height="${h - 2 * pad}" fill="none" stroke="#888"/>
${bounds.join('\n')}
${line(
  points.map((p) => yLoss(p.loss)),
  '#c0392b',
)}
${line(
  points.map((p) => (p.valAccuracy === undefined ? undefined : yAcc(p.valAccuracy))),
  '#2471a3',
)}
<text x="${pad}" y="${pad - 8}" font-size="12" fill="#c0392b">loss (max ${maxLoss.toFixed(2)})</text>
<text x="${w - pad}" y="${pad - 8}" font-size="12" fill="#2471a3" text-anchor="end">held-out accuracy (0–1)</text>
<text x="${w / 2}" y="${h - 10}" font-size="12" text-anchor="middle">epoch (dashed lines: next stage)</text>
</svg>`;
}

export function reportHtml(r: TrainingReport): string {
  const rows = (cells: (string | number)[][]) =>
    cells.map((c) => `<tr>${c.map((v) => `<td>${esc(String(v))}</td>`).join('')}</tr>`).join('\n');
  const confusion = `<table><caption>Confusion matrix (rows: true label, columns: predicted)</caption>
<tr><th></th>${r.labels.map((l) => `<th scope="col">${esc(l)}</th>`).join('')}</tr>
${r.final.confusion.map((row, i) => `<tr><th scope="row">${esc(r.labels[i])}</th>${row.map((v) => `<td>${v}</td>`).join('')}</tr>`).join('\n')}
</table>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EffiTag training report: ${esc(r.name)}</title>
<style>body{font:14px system-ui,sans-serif;margin:2rem;max-width:60rem}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}caption{text-align:left;font-weight:600;padding:.25rem 0}</style>
</head><body>
<h1>${esc(r.name)}: ${pct(r.final.accuracy)} held-out accuracy</h1>
<p>Base ${esc(r.base)}; ${r.images.train} training and ${r.images.val} held-out images${r.images.skipped ? `, ${r.images.skipped} skipped` : ''}; ${r.seconds.toFixed(0)} s on ${esc(r.backend)}.</p>
<p>Training ${esc(r.convergence)}.</p>
${[...r.warnings, ...r.alerts].map((w) => `<p><strong>Warning:</strong> ${esc(w)}</p>`).join('\n')}
${plot(r.epochs)}
<table><caption>Stages</caption><tr><th>phase</th><th>stage</th><th>size</th><th>RandAugment</th><th>Mixup α</th><th>dropout</th><th>epochs</th><th>stopped</th><th>held-out accuracy</th><th>training accuracy</th><th>seconds</th></tr>
${rows(
  r.stages.map((s) => [
    s.phase,
    s.stage + 1,
    s.size,
    s.randAugment,
    s.mixup,
    s.dropout,
    s.epochs,
    s.stop ?? 'fixed',
    pct(s.valAccuracy),
    s.trainAccuracy === undefined ? '' : pct(s.trainAccuracy),
    s.seconds.toFixed(1),
  ]),
)}
</table>
<table><caption>Per class (held out)</caption><tr><th>label</th><th>precision</th><th>recall</th><th>images</th></tr>
${rows(r.final.perClass.map((c) => [c.label, pct(c.precision), pct(c.recall), c.support]))}
</table>
${confusion}
${r.skipped.length ? `<h2>Skipped images</h2><ul>${r.skipped.map((s) => `<li>${esc(s.path)}: ${esc(s.reason)}</li>`).join('')}</ul>` : ''}
</body></html>
`;
}
