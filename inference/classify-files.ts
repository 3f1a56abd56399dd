/** Classify image files with any engine: decode (in parallel), batch, top-k; one error per bad file. */
import { readFile } from 'node:fs/promises';
import { decodeImage, type DecodedImage } from './image.ts';
import { topK, type LoadedModel, type Prediction } from './engine.ts';
import { labelsFor } from '../model/labels.ts';

export type FileResult = { image: string; variant: string; top: Prediction[] } | { image: string; variant: string; error: string };

export async function classifyFiles(
  model: LoadedModel,
  files: readonly string[],
  options: { topK: number; batchSize?: number },
): Promise<FileResult[]> {
  const labels = labelsFor(model.manifest);
  const batchSize = options.batchSize ?? 8;
  const results: FileResult[] = new Array(files.length);
  for (let start = 0; start < files.length; start += batchSize) {
    const chunk = files.slice(start, start + batchSize);
    const decoded = await Promise.all(
      chunk.map(async (file): Promise<DecodedImage | Error> => {
        try {
          return await decodeImage(await readFile(file), model.resolution);
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err));
        }
      }),
    );
    const good = decoded.flatMap((d, i) => (d instanceof Error ? [] : [{ i, d }]));
    const probabilities = await model.classify(good.map((g) => g.d));
    good.forEach((g, j) => {
      results[start + g.i] = { image: chunk[g.i], variant: model.variant, top: topK(probabilities[j], options.topK, labels) };
    });
    decoded.forEach((d, i) => {
      if (d instanceof Error) results[start + i] = { image: chunk[i], variant: model.variant, error: d.message };
    });
  }
  return results;
}
