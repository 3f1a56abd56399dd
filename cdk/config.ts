/**
 * Stack configuration from cdk.json context (override any key with `-c key=value`):
 *
 * | key | meaning | default |
 * |---|---|---|
 * | effitag:tiersFile | tiers file, validated at synth (an invalid file fails synthesis) | tiers/defaults.json |
 * | effitag:bucketName | bucket to tag; absent → the stack creates one | (created) |
 * | effitag:bucketKmsKeyArn | the bucket's SSE-KMS key; grants kms:Decrypt/GenerateDataKey only then | (none) |
 * | effitag:prefixes | comma-separated key prefixes to watch ('' = the whole bucket) | '' |
 * | effitag:weightsBucket / effitag:weightsPrefix | where `effitag weights publish` put the weights | (a created bucket), weights/ |
 * | effitag:vpcId | an existing VPC for the GPU instances; absent → a minimal one (public subnets, no NAT) | (created) |
 * | effitag:alarmEmail | e-mail subscribed to the alarms | (none) |
 * | effitag:index | keep the tag index (DynamoDB) for `effitag search` and the gallery; `false` saves its cost | true |
 * | effitag:events | how uploads reach the intake queue: `s3` (bucket notification rules) or `eventbridge` | s3 for a created bucket, eventbridge for effitag:bucketName |
 *
 * Why EventBridge for an existing bucket: a bucket's notification rules are one document, and S3
 * refuses a rule whose events and prefix/suffix overlap another's ("Configurations overlap"); an
 * existing bucket often has one already (`effitag preflight` names it). aws-cdk-lib's handler for
 * imported buckets also recognises its own rules by an id it hashes anew in each run (aws-cdk issue
 * 31303), so an update can re-add them and fail the same way. EventBridge delivery is the bucket's
 * EventBridge switch plus a rule in this stack: it never touches the notification rules. It costs
 * $1 per million events after the free tier; a bucket the stack creates has no other rules, so it
 * keeps the free S3 notifications.
 */
import type { Node } from 'constructs';
import { readTiersJson, resolveTiersPath } from '../tiers/load.ts';
import { parseTiers, type TiersFile } from '../tiers/schema.ts';

/** The stack's configuration, read from the cdk context (`-c effitag:…`) by {@link configFromContext}. */
export interface EffiTagConfig {
  /**
   * The tiers file's path (`effitag:tiersFile`).
   * @default - EFFITAG_TIERS_FILE, else tiers/defaults.json
   */
  readonly tiersFile: string;
  /** The tiers file, parsed. */
  readonly tiers: TiersFile;
  /**
   * Tag this existing bucket (`effitag:bucketName`).
   * @default - a created bucket
   */
  readonly bucketName?: string;
  /**
   * The bucket's SSE-KMS key (`effitag:bucketKmsKeyArn`).
   * @default - no KMS grants (S3-managed encryption)
   */
  readonly bucketKmsKeyArn?: string;
  /**
   * The watched prefixes (`effitag:prefixes`, comma-separated; '' = the whole bucket).
   * @default [''] (the whole bucket)
   */
  readonly prefixes: string[];
  /**
   * The weights bucket (`effitag:weightsBucket`).
   * @default - a created, versioned bucket
   */
  readonly weightsBucket?: string;
  /**
   * The weights' key prefix (`effitag:weightsPrefix`).
   * @default 'weights/'
   */
  readonly weightsPrefix: string;
  /**
   * The VPC the GPU tiers run in (`effitag:vpcId`); binds the stack to the CLI's account and region.
   * @default - a created minimal VPC (public subnets, no NAT)
   */
  readonly vpcId?: string;
  /**
   * An address the alarm topic e-mails (`effitag:alarmEmail`).
   * @default - no subscription
   */
  readonly alarmEmail?: string;
  /**
   * Keep the tag index, a DynamoDB table the workers write (`effitag:index`).
   * @default true
   */
  readonly index: boolean;
  /**
   * How uploads reach the intake queue (`effitag:events`).
   * @default - 'eventbridge' for an existing bucket, 's3' for a created one
   */
  readonly events: EventsMode;
}

export const EVENTS_MODES = ['s3', 'eventbridge'] as const;
export type EventsMode = (typeof EVENTS_MODES)[number];

/** The delivery mode asked for, else the default: EventBridge for an existing bucket, S3 notifications for a created one. */
export function eventsMode(asked: string | undefined, bucketName: string | undefined): EventsMode {
  if (asked === undefined) return bucketName ? 'eventbridge' : 's3';
  if (!(EVENTS_MODES as readonly string[]).includes(asked))
    throw new Error(`effitag:events: "${asked}" is not one of ${EVENTS_MODES.join(', ')}`);
  return asked as EventsMode;
}

const str = (node: Node, key: string): string | undefined => {
  const v = node.tryGetContext(key);
  return v === undefined || v === null || v === '' ? undefined : String(v);
};

export function configFromContext(node: Node, cwd = process.cwd()): EffiTagConfig {
  const tiersFile = resolveTiersPath(str(node, 'effitag:tiersFile') ?? process.env.EFFITAG_TIERS_FILE, {}, cwd);
  const tiers = parseTiers(readTiersJson(tiersFile), tiersFile); // throws with every path-named error
  const prefixes = (str(node, 'effitag:prefixes') ?? '').split(',').map((p) => p.trim());
  const unique = [...new Set(prefixes)];
  const bucketName = str(node, 'effitag:bucketName');
  const events = eventsMode(str(node, 'effitag:events'), bucketName);
  if (events === 's3')
    for (const a of unique)
      for (const b of unique) {
        // S3 rejects notification rules whose prefixes overlap for the same event type (an EventBridge rule's prefix list may overlap).
        if (a !== b && b.startsWith(a))
          throw new Error(
            `effitag:prefixes: "${b}" overlaps "${a}"; S3 notifications cannot overlap (or use -c effitag:events=eventbridge)`,
          );
      }
  const index = str(node, 'effitag:index') !== 'false';
  const indexOnly = tiers.indexOnlyTiers;
  if (!index && indexOnly.length)
    throw new Error(`effitag:index=false, but tier ${indexOnly.join(', ')} writes back to the index only (writeBack: index)`);
  return {
    tiersFile,
    index,
    events,
    tiers,
    bucketName,
    bucketKmsKeyArn: str(node, 'effitag:bucketKmsKeyArn'),
    prefixes: unique,
    weightsBucket: str(node, 'effitag:weightsBucket'),
    weightsPrefix: (str(node, 'effitag:weightsPrefix') ?? 'weights/').replace(/^\/+/, ''),
    vpcId: str(node, 'effitag:vpcId'),
    alarmEmail: str(node, 'effitag:alarmEmail'),
  };
}
