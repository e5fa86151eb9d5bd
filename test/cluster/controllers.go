package cluster

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// TaintNotReady is the taint the API server puts on every new node; the
// node lifecycle controller (absent here) would lift it once the node is
// Ready.
const TaintNotReady = "node.kubernetes.io/not-ready"

// startControllers runs the two duties of kube-controller-manager that a
// cluster without one still needs: a "default" ServiceAccount in every
// namespace (so ServiceAccount admission admits pods) and removal of the
// not-ready taint from Ready nodes (so the scheduler can use them).
func (c *Cluster) startControllers() {
	ctx, cancel := context.WithCancel(context.Background())
	c.ctrlCancel = cancel
	c.ctrlDone = make(chan struct{})

	factory := informers.NewSharedInformerFactory(c.Client, 0)
	nsQueue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	nodeQueue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())

	nsInf := factory.Core().V1().Namespaces().Informer()
	_, _ = nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { nsQueue.Add(obj.(*corev1.Namespace).Name) },
	})
	saInf := factory.Core().V1().ServiceAccounts().Informer()
	_, _ = saInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if sa, ok := obj.(*corev1.ServiceAccount); ok && sa.Name == "default" {
				nsQueue.Add(sa.Namespace)
			}
		},
	})
	nodeInf := factory.Core().V1().Nodes().Informer()
	enqueueNode := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok && nodeReady(n) && hasTaint(n, TaintNotReady) {
			nodeQueue.Add(n.Name)
		}
	}
	_, _ = nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNode,
		UpdateFunc: func(_, obj any) { enqueueNode(obj) },
	})
	factory.Start(ctx.Done())

	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced, saInf.HasSynced)
		runQueue(ctx, nsQueue, func(ns string) error { return c.ensureDefaultServiceAccount(ctx, ns) })
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced)
		runQueue(ctx, nodeQueue, func(name string) error { return c.untaintReadyNode(ctx, name) })
	}()
	go func() {
		<-ctx.Done()
		nsQueue.ShutDown()
		nodeQueue.ShutDown()
		<-done
		<-done
		factory.Shutdown()
		close(c.ctrlDone)
	}()
}

func runQueue(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], sync func(string) error) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		if err := sync(key); err != nil && ctx.Err() == nil {
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

func (c *Cluster) ensureDefaultServiceAccount(ctx context.Context, ns string) error {
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
		return nil // exists, or the namespace is gone
	}
	if apierrors.IsForbidden(err) {
		return nil // namespace terminating
	}
	return err
}

func (c *Cluster) untaintReadyNode(ctx context.Context, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if !nodeReady(n) || !hasTaint(n, TaintNotReady) {
			return nil
		}
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintNotReady })
		_, err = c.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

// CreateNamespace creates a namespace and waits for the harness to give it
// its "default" ServiceAccount, without which ServiceAccount admission
// rejects pods.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	err = waitFor(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s: default ServiceAccount not created: %w", name, err)
	}
	return nil
}
