/** The rule that picks ImageNet's searchable tags from WordNet (used by scripts/imagenet-wordnet.ts, recorded in model/tag-hierarchy.json). */
/**
 * Which WordNet ancestors become tags. An ancestor is kept when it
 * - holds at least `minClasses` classes (one class alone adds only a synonym) and at most `maxShare`
 *   of all classes (above that it says nothing: entity, object, whole, artifact, organism …);
 * - is not in WordNet's abstract upper level (lexicographer file noun.Tops: matter, abstraction,
 *   causal agent …), except the `keepTopLevel` ones people do search by;
 * - is not in `drop` (WordNet-internal groupings nobody searches for);
 * - is the nearest of the ancestors holding exactly the same classes (vertebrate, not chordate).
 * Every tag costs one index write per image, so an uninformative tag is not free.
 */
export const TAG_RULE = {
  minClasses: 2,
  maxShare: 0.4,
  keepTopLevel: ['n00015388' /* animal */, 'n00007846' /* person */, 'n00017222' /* plant */, 'n00021265' /* food */],
  drop: ['n03575240' /* instrumentality */],
} as const;

export interface TagHierarchyFile {
  source: string;
  rule: { minClasses: number; maxShare: number; keepTopLevel: readonly string[]; drop: readonly string[] };
  /** Per class index: its WordNet id and its tags (indices into `tags`), most specific first. */
  classes: { wnid: string; tags: number[] }[];
  tags: { wnid: string; name: string; classes: number; gloss: string }[];
}
