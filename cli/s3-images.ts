/**
 * A training data set under an S3 prefix (`s3://BUCKET/PREFIX/<label>/<image>`), read through the
 * object store: `effitag train --data s3://…`. An adapter between two layers that do not know each
 * other, the pipeline's object-store port and training's ImageSource, so it lives here with the
 * commands that compose them: training stays free of the pipeline, and the pipeline of training.
 */
import { parseS3Folder } from '../base/s3-url.ts';
import { StoreError, type ObjectStore, type StoreErrorKind } from '../pipeline/ports.ts';
import { UnreadableImage, type ImageSource } from '../training/dataset.ts';

const PER_OBJECT: StoreErrorKind[] = ['not-found', 'too-large', 'archived', 'unreadable', 'precondition'];

/** Images are read whole, up to `maxBytes` each (larger ones are skipped as unreadable by the loader). */
export function s3ImageSource(store: ObjectStore, url: string, maxBytes = 50 * 1024 * 1024): ImageSource {
  const { bucket, prefix } = parseS3Folder(url);
  return {
    describe: url,
    async list() {
      const paths: string[] = [];
      let continuationToken: string | undefined;
      do {
        const page = await store.list(bucket, { prefix, continuationToken });
        for (const o of page.objects) {
          const path = o.key.slice(prefix.length);
          // One folder level per label; deeper keys and folder markers are not images of a label.
          if (/^[^/]+\/[^/]+$/.test(path) && o.size > 0) paths.push(path);
        }
        continuationToken = page.nextContinuationToken;
      } while (continuationToken);
      return paths;
    },
    async read(path) {
      try {
        return (await store.get({ bucket, key: `${prefix}${path}` }, { maxBytes })).bytes;
      } catch (err) {
        // This object cannot be had (gone, too large, archived): skip it. Anything else (access, network) stops training.
        if (err instanceof StoreError && PER_OBJECT.includes(err.kind)) throw new UnreadableImage(`${err.kind}: ${err.message}`);
        throw err;
      }
    },
  };
}
