//! Pod volumes: materialises emptyDir, hostPath, configMap, secret, projected,
//! downwardAPI and persistentVolumeClaim volumes on the node and turns
//! container volumeMounts into the runtime's bind mounts.
