/*
 * tree.c -- the intrusive AVL tree behind every kv index.
 *
 * Why AVL: it is deterministic (no random levels, so no generator to seed
 * and snapshot), strictly O(log n) for insert, remove and seek, and small
 * enough to get right. Nodes carry subtree sizes so rank queries (how many
 * keys have expired by now) are O(log n) too. Recursion depth is the tree
 * height, at most ~1.44 log2 n. Comparators work against a probe, so a
 * lookup needs no temporary node.
 */
#include "kv/kv_internal.h"

static uint32_t avl_h(const struct kv_avl *n)
{
	return n ? n->height : 0;
}

static uint64_t avl_size(const struct kv_avl *n)
{
	return n ? n->size : 0;
}

static void avl_fix(struct kv_avl *n)
{
	uint32_t hl = avl_h(n->left), hr = avl_h(n->right);
	n->height = 1 + (hl > hr ? hl : hr);
	n->size = 1 + avl_size(n->left) + avl_size(n->right);
}

static struct kv_avl *avl_rot_right(struct kv_avl *n)
{
	struct kv_avl *l = n->left;
	KEEL_ASSERT(l != NULL);
	n->left = l->right;
	l->right = n;
	avl_fix(n);
	avl_fix(l);
	return l;
}

static struct kv_avl *avl_rot_left(struct kv_avl *n)
{
	struct kv_avl *r = n->right;
	KEEL_ASSERT(r != NULL);
	n->right = r->left;
	r->left = n;
	avl_fix(n);
	avl_fix(r);
	return r;
}

static struct kv_avl *avl_balance(struct kv_avl *n)
{
	avl_fix(n);
	int64_t bf = (int64_t)avl_h(n->left) - (int64_t)avl_h(n->right);
	if (bf > 1) {
		if (avl_h(n->left->left) < avl_h(n->left->right))
			n->left = avl_rot_left(n->left);
		return avl_rot_right(n);
	}
	if (bf < -1) {
		if (avl_h(n->right->right) < avl_h(n->right->left))
			n->right = avl_rot_right(n->right);
		return avl_rot_left(n);
	}
	return n;
}

struct kv_avl *kv_avl_insert(struct kv_avl *root, struct kv_avl *node,
			     const struct kv_probe *probe, kv_avl_cmp_fn cmp)
{
	if (!root) {
		node->left = node->right = NULL;
		avl_fix(node);
		return node;
	}
	int c = cmp(probe, root);
	KEEL_ASSERT(c != 0); /* callers insert only absent keys */
	if (c < 0)
		root->left = kv_avl_insert(root->left, node, probe, cmp);
	else
		root->right = kv_avl_insert(root->right, node, probe, cmp);
	return avl_balance(root);
}

static struct kv_avl *avl_remove_min(struct kv_avl *n, struct kv_avl **min)
{
	if (!n->left) {
		*min = n;
		return n->right;
	}
	n->left = avl_remove_min(n->left, min);
	return avl_balance(n);
}

struct kv_avl *kv_avl_remove(struct kv_avl *root, const struct kv_probe *probe,
			     kv_avl_cmp_fn cmp)
{
	KEEL_ASSERT(root != NULL); /* the node must be present */
	int c = cmp(probe, root);
	if (c < 0) {
		root->left = kv_avl_remove(root->left, probe, cmp);
		return avl_balance(root);
	}
	if (c > 0) {
		root->right = kv_avl_remove(root->right, probe, cmp);
		return avl_balance(root);
	}
	struct kv_avl *l = root->left, *r = root->right;
	root->left = root->right = NULL;
	if (!r)
		return l;
	/* Splice the successor in place of root: intrusive nodes are moved,
	 * never copied, because they belong to entries. */
	struct kv_avl *m = NULL;
	r = avl_remove_min(r, &m);
	m->left = l;
	m->right = r;
	return avl_balance(m);
}

struct kv_avl *kv_avl_find(struct kv_avl *root, const struct kv_probe *probe,
			   kv_avl_cmp_fn cmp)
{
	while (root) {
		int c = cmp(probe, root);
		if (c == 0)
			return root;
		root = c < 0 ? root->left : root->right;
	}
	return NULL;
}

uint64_t kv_avl_rank(const struct kv_avl *root, const struct kv_probe *probe,
		     kv_avl_cmp_fn cmp)
{
	uint64_t rank = 0;
	while (root) {
		if (cmp(probe, root) <= 0) {
			root = root->left;
		} else {
			rank += avl_size(root->left) + 1;
			root = root->right;
		}
	}
	return rank;
}

static void avl_push(struct kv_avl_iter *it, struct kv_avl *n)
{
	KEEL_ASSERT(it->depth < KV_AVL_MAX_DEPTH);
	it->stack[it->depth++] = n;
}

void kv_avl_seek(struct kv_avl_iter *it, struct kv_avl *root,
		 const struct kv_probe *probe, kv_avl_cmp_fn cmp)
{
	it->depth = 0;
	while (root) {
		if (!probe || cmp(probe, root) <= 0) {
			avl_push(it, root);
			root = root->left;
		} else {
			root = root->right;
		}
	}
}

void kv_avl_next(struct kv_avl_iter *it)
{
	KEEL_ASSERT(it->depth > 0);
	struct kv_avl *n = it->stack[--it->depth]->right;
	while (n) {
		avl_push(it, n);
		n = n->left;
	}
}

void kv_avl_drain(struct kv_avl *root, void (*visit)(void *arg, struct kv_avl *n),
		  void *arg)
{
	struct kv_avl *n = root;
	while (n) {
		if (n->left) {
			struct kv_avl *l = n->left;
			n->left = l->right;
			l->right = n;
			n = l;
		} else {
			struct kv_avl *next = n->right;
			visit(arg, n);
			n = next;
		}
	}
}
