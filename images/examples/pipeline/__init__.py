"""The steps of DAGFlow's example ML pipeline.

`pipeline.process` writes a train/test split of scikit-learn's diabetes data set, `pipeline.train`
fits one regression model and records its metrics, and `pipeline.serve` answers predictions with the
model that scored best. The steps share nothing but a data directory (`--data`): a volume mounted
into every pod of the flow, or any local directory.
"""

__version__ = "0.1.0"
