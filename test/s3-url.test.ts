/**
 * The one reader of s3:// URLs (base/s3-url.ts, issue 22): a target's prefix as typed, a folder's
 * prefix ending in '/', one object's key (which may hold a newline), and a clear refusal otherwise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseS3Folder, parseS3Object, parseS3Url } from '../base/s3-url.ts';

describe('s3:// URLs', () => {
  it('a target: the bucket and the prefix as typed (a key prefix need not be a folder)', () => {
    assert.deepEqual(parseS3Url('s3://photos'), { bucket: 'photos', prefix: '' });
    assert.deepEqual(parseS3Url('s3://photos/'), { bucket: 'photos', prefix: '' });
    assert.deepEqual(parseS3Url('s3://photos/2026/img-'), { bucket: 'photos', prefix: '2026/img-' });
    assert.throws(() => parseS3Url('photos/2026'), /^Error: expected s3:\/\/bucket\[\/prefix\], got photos\/2026$/);
    assert.throws(() => parseS3Url('s3:///key'), /expected s3:\/\/bucket\[\/prefix\]/);
  });

  it('a folder (weights, a training set): the prefix ends in a slash', () => {
    assert.deepEqual(parseS3Folder('s3://weights/models'), { bucket: 'weights', prefix: 'models/' });
    assert.deepEqual(parseS3Folder('s3://weights/models/'), { bucket: 'weights', prefix: 'models/' });
    assert.deepEqual(parseS3Folder('s3://weights'), { bucket: 'weights', prefix: '' });
    assert.throws(() => parseS3Folder('https://weights/models'), /^Error: expected s3:\/\/bucket\/prefix, got https:\/\/weights\/models$/);
  });

  it('one object: a key is required, and may hold a line feed', () => {
    assert.deepEqual(parseS3Object('s3://photos/a/b.jpg'), { bucket: 'photos', key: 'a/b.jpg' });
    assert.deepEqual(parseS3Object('s3://photos/line\nfeed.jpg'), { bucket: 'photos', key: 'line\nfeed.jpg' });
    assert.throws(() => parseS3Object('s3://photos'), /^Error: expected s3:\/\/bucket\/key, got s3:\/\/photos$/);
    assert.throws(() => parseS3Object('s3://photos/'), /expected s3:\/\/bucket\/key/);
  });
});
