/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs-plant-record STORE SRC NEW DIGEST
 *
 * A compromised store in a test: copy the image record SRC to NEW with every
 * digest that names a file (target, config, index, each layer's diffID and
 * chainID) replaced by DIGEST (e.g. "sha256:../../../etc/passwd"), written
 * through the store API as a real record would be.
 */
#include "store/store.h"

#include <stdio.h>

int main(int argc, char **argv)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	json_t *rec, *layers, *l;
	size_t i;

	if (argc != 5) {
		fprintf(stderr, "usage: %s STORE SRC NEW DIGEST\n", argv[0]);
		return 2;
	}
	if (imgfs_store_open(argv[1], &s, &err) < 0 ||
	    imgfs_store_get_image(s, argv[2], &rec, &err) < 0) {
		fprintf(stderr, "%s: %s\n", argv[0], err.msg);
		return 1;
	}
	json_object_set_new(rec, "name", json_string(argv[3]));
	for (const char *const *k = (const char *const[]){"target", "config", "index", NULL}; *k;
	     k++) {
		json_t *o = json_object_get(rec, *k);
		if (json_is_object(o))
			json_object_set_new(o, "digest", json_string(argv[4]));
	}
	layers = json_object_get(rec, "layers");
	json_array_foreach(layers, i, l)
	{
		json_object_set_new(l, "diffID", json_string(argv[4]));
		json_object_set_new(l, "chainID", json_string(argv[4]));
	}
	if (imgfs_store_put_image(s, argv[3], rec, &err) < 0) {
		fprintf(stderr, "%s: %s\n", argv[0], err.msg);
		return 1;
	}
	json_decref(rec);
	imgfs_store_close(s);
	return 0;
}
