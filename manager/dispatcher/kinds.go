package dispatcher

import storev1 "github.com/shoal-dev/shoal/proto/store/v1"

func storeRemove() storev1.StoreAction_Kind { return storev1.StoreAction_KIND_REMOVE }
