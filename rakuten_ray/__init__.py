"""rakuten-ray: a multimodal product classifier trained with Ray Train, scored with Ray Data."""
