"""The gateway process: the FastAPI app apps call for recommendations (`main.create_app`).

It imports nothing from jobs/, from the model server's package or from TensorFlow: models are
called over gRPC (serving/tfs_client.py), features are read through the features runtime
(features/), and scoring/ holds the scoring path it shares with offline evaluation.
"""
