/* SPDX-License-Identifier: Apache-2.0 */
/* The imgfs command. */
#include <stdio.h>
int main(void)
{
	fprintf(stderr, "imgfs: under construction\n");
	return 1;
}
