/**
 * The tag index table (pipeline/tag-index.ts): tag → objects, written by the workers, kept true by
 * the router on ObjectRemoved events, read by `effitag search` and `effitag gallery` with the
 * user's credentials. On demand (no capacity to plan; a backfill's burst is absorbed), encrypted
 * with an AWS-managed key, point-in-time recovery on, retained when the stack is deleted.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** What each role does with the index, and nothing more. */
export const INDEX_ACTIONS = {
  /** Workers: read an object's record, write it and its entries, delete replaced entries. */
  worker: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:BatchWriteItem'],
  /** The router: an object removed → its record read, its entries and record deleted. */
  router: ['dynamodb:GetItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem'],
  /** Backfill batches: an index-only tier's record says whether an object is tagged already. */
  backfill: ['dynamodb:GetItem'],
} as const;

export class TagIndexTable extends Construct {
  readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // The index can be rebuilt from the objects' metadata (backfill --index), but not cheaply.
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  grant(grantee: iam.IGrantable, role: keyof typeof INDEX_ACTIONS): void {
    this.table.grant(grantee, ...INDEX_ACTIONS[role]);
  }
}
